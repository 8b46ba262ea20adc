// The CPU backend: OpenBLAS GEMMs and OpenMP loops, fp32 accumulation. Also the test oracle.
#pragma once

#include <string>
#include <vector>

#include "model/backend.h"

namespace unmask {

// Row-level pick on the host, shared by the CPU backend and tests: `row` is modified in place
// (CFG combine, banned tokens); `scratch` is reused between calls to avoid allocation.
PickResult pick_row(float* row, const float* uncond_row, int64_t vocab, const PickParams& params,
                    const std::vector<int32_t>& banned, std::vector<int32_t>& scratch);

// The processor's model name from /proc/cpuinfo ("CPU" when unknown).
std::string cpu_model_name();

}  // namespace unmask
