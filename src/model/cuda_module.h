// The entry point of the CUDA backend module (libunmask-cuda.so), loaded with dlopen on demand.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "model/backend.h"

namespace unmask {

// Bumped whenever this struct or the Backend interface changes; with the version string it keeps
// a module from another build from being used.
constexpr uint32_t kCudaModuleAbi = 1;

// What the module's extern "C" function `unmask_cuda_module` returns (a static object).
struct CudaModuleEntry {
  uint32_t abi = 0;             // kCudaModuleAbi of the module's build
  const char* version = "";     // UNMASK_VERSION of the module's build
  // As make_cuda_backend / cuda_device_usable in cuda/cuda_backend.h.
  std::unique_ptr<Backend> (*make_backend)() = nullptr;
  bool (*device_usable)(std::string* why) = nullptr;
};

}  // namespace unmask
