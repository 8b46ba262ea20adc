// The CUDA backend as a loadable module: the one symbol the executable looks up with dlsym.
#include "cuda/cuda_backend.h"
#include "model/cuda_module.h"

extern "C" __attribute__((visibility("default"))) const unmask::CudaModuleEntry* unmask_cuda_module() {
  static const unmask::CudaModuleEntry entry{unmask::kCudaModuleAbi, UNMASK_VERSION,
                                              &unmask::make_cuda_backend,
                                              &unmask::cuda_device_usable};
  return &entry;
}
