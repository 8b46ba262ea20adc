// Backend factory: the one place that knows whether the CUDA backend was compiled in.
#include "model/backend.h"

#include <dlfcn.h>

#include <filesystem>
#include <iostream>

#include "common.h"

#if defined(UNMASK_WITH_CUDA)
#include "cuda/cuda_backend.h"
#endif

namespace unmask {

bool cuda_compiled_in() {
#if defined(UNMASK_WITH_CUDA)
  return true;
#else
  return false;
#endif
}

bool nvidia_driver_present(std::string* why) {
  // note: RTLD_LAZY loads the library without initialising CUDA; it stays loaded, as it would be
  // for the CUDA runtime anyway.
  if (void* lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL)) {
    (void)lib;
    return true;
  }
  std::error_code ec;
  if (std::filesystem::exists("/proc/driver/nvidia/version", ec)) {
    if (why) *why = "the NVIDIA kernel module is loaded but its user-space library libcuda.so.1 is missing";
    return false;
  }
  if (why) *why = "no NVIDIA driver found (libcuda.so.1 is not installed)";
  return false;
}

std::unique_ptr<Backend> make_backend(const std::string& kind, int threads) {
  if (kind == "cpu") return make_cpu_backend(threads);
  if (kind == "cuda") {
#if defined(UNMASK_WITH_CUDA)
    return make_cuda_backend();  // throws a one-line Error when no usable device
#else
    fail_usage("--backend cuda: this unmask was built without CUDA (configure with -DUNMASK_CUDA=ON)");
#endif
  }
  if (kind == "auto") {
#if defined(UNMASK_WITH_CUDA)
    std::string why;
    if (cuda_device_usable(&why)) return make_cuda_backend();
    // note: said only where an NVIDIA driver is installed, i.e. a GPU that cannot be used (old
    // driver, missing architecture); a machine without one gets the CPU silently.
    std::error_code ec;
    if (std::filesystem::exists("/proc/driver/nvidia/version", ec))
      std::cerr << "unmask: no usable CUDA device (" << why << "); using the CPU backend\n";
#endif
    return make_cpu_backend(threads);
  }
  fail_usage("--backend: unknown backend '" + kind + "' (choose auto, cpu or cuda)");
}

}  // namespace unmask
