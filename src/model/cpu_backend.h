// The CPU backend: OpenBLAS GEMMs on our thread pool, fp32 accumulation. Also the test oracle.
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

// The most threads the CPU backend takes: 4 per core, at least 8 (each allocates its own scratch).
int max_cpu_threads();
// The thread count for `requested` (> 0: itself; else $OMP_NUM_THREADS when set; else the cores).
// fail_usage when OMP_NUM_THREADS is not a positive decimal integer or exceeds max_cpu_threads(),
// as --threads would.
int resolve_cpu_threads(int requested);

}  // namespace unmask
