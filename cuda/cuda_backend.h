// The CUDA backend's factory and the device probe behind `--backend auto`; plain C++, no CUDA types.
#pragma once

#include <memory>
#include <string>

#include "model/backend.h"

namespace unmask {

// Throws a one-line Error (kExitRuntime) when no usable device is present.
std::unique_ptr<Backend> make_cuda_backend();

// True when device 0 can run this build: a driver new enough for the runtime, compute
// capability >= 8.0, and machine code (or PTX) for it in the binary. Otherwise false with the
// reason in `why` (one line, no prefix).
bool cuda_device_usable(std::string* why);

}  // namespace unmask
