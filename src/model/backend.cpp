// Backend factory: the one place that knows whether the CUDA backend was compiled in, and that
// loads its module.
#include "model/backend.h"

#include <dlfcn.h>

#include <filesystem>
#include <iostream>
#include <vector>

#include "common.h"
#include "model/cuda_module.h"

namespace unmask {

bool cuda_compiled_in() {
#if defined(UNMASK_WITH_CUDA)
  return true;
#else
  return false;
#endif
}

#if defined(UNMASK_WITH_CUDA)
namespace {

std::string directory_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// Loads libunmask-cuda.so once: next to the executable (a build tree, or a relocated install),
// then the install directory, then the build tree this binary came from (for the tests). Null
// with `why` when none loads.
const CudaModuleEntry* cuda_module(std::string* why) {
  static const CudaModuleEntry* entry = nullptr;
  static std::string error;
  static bool tried = false;
  if (!tried) {
    tried = true;
    std::error_code ec;
    const std::string exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
    std::vector<std::string> candidates;
    if (!ec) candidates.push_back(directory_of(exe) + "/" UNMASK_CUDA_MODULE_NAME);
    candidates.push_back(UNMASK_CUDA_MODULE_INSTALL_PATH);
    candidates.push_back(UNMASK_CUDA_MODULE_BUILD_PATH);
    void* lib = nullptr;
    for (const std::string& path : candidates) {
      if (!std::filesystem::exists(path, ec)) continue;
      lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!lib) {
        error = std::string("cannot load the CUDA module: ") + dlerror();
        break;
      }
      auto get = reinterpret_cast<const CudaModuleEntry* (*)()>(dlsym(lib, "unmask_cuda_module"));
      const CudaModuleEntry* e = get ? get() : nullptr;
      if (!e || e->abi != kCudaModuleAbi || std::string(e->version) != UNMASK_VERSION) {
        error = "the CUDA module " + path + " is from another build of unmask; rebuild or reinstall";
        break;
      }
      entry = e;
      break;
    }
    if (!entry && error.empty())
      error = "the CUDA module " UNMASK_CUDA_MODULE_NAME " is missing (looked next to the executable and in " +
              directory_of(UNMASK_CUDA_MODULE_INSTALL_PATH) + ")";
  }
  if (!entry && why) *why = error;
  return entry;
}

}  // namespace
#endif

std::unique_ptr<Backend> make_backend(const std::string& kind, int threads) {
  if (kind == "cpu") return make_cpu_backend(threads);
  if (kind == "cuda") {
#if defined(UNMASK_WITH_CUDA)
    std::string why;
    // note: without a driver the CUDA runtime says "driver version is insufficient", which
    // misleads; and the module need not be loaded to know.
    if (!nvidia_driver_present(&why)) fail_runtime("--backend cuda: " + why);
    const CudaModuleEntry* module = cuda_module(&why);
    if (!module) fail_runtime("--backend cuda: " + why);
    return module->make_backend();  // throws a one-line Error when no usable device
#else
    fail_usage("--backend cuda: this unmask was built without CUDA (configure with -DUNMASK_CUDA=ON)");
#endif
  }
  if (kind == "auto") {
#if defined(UNMASK_WITH_CUDA)
    // note: a machine without a driver gets the CPU silently, without loading the CUDA libraries
    // (about 0.3 s of start-up); one with a driver but no usable GPU (old driver, missing
    // architecture, missing module) is told why.
    std::string why;
    if (nvidia_driver_present()) {
      const CudaModuleEntry* module = cuda_module(&why);
      if (module && module->device_usable(&why)) return module->make_backend();
      std::cerr << "unmask: no usable CUDA device (" << why << "); using the CPU backend\n";
    }
#endif
    return make_cpu_backend(threads);
  }
  fail_usage("--backend: unknown backend '" + kind + "' (choose auto, cpu or cuda)");
}

}  // namespace unmask
