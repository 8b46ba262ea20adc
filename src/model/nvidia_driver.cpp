// Whether an NVIDIA driver is installed, without initialising CUDA. Also compiled into the CUDA
// module, which asks the same question before the CUDA runtime would answer it misleadingly.
#include <dlfcn.h>

#include <filesystem>
#include <string>

#include "model/backend.h"

namespace unmask {

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

}  // namespace unmask
