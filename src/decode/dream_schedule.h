// The timestep schedule of Dream's diffusion_generate (DESIGN.md §4), in float32 as the reference
// computes it on the GPU, so that the per-step token counts agree exactly.
#pragma once

#include <vector>

namespace unmask {

// t_0..t_S from 1 down to eps: torch's CUDA linspace(1, eps, S + 1), which fills the first half
// from the start and the second half from the end.
std::vector<float> dream_timesteps(int steps, float eps);

// The share of the masked positions step i commits: 1 - t_{i+1}/t_i, and 1 at the last step.
float dream_transfer_share(const std::vector<float>& t, int step);

// Positions committed at step i with n masked: int(n * share), every one at the last step.
int dream_transfer_count(const std::vector<float>& t, int step, int masked);

}  // namespace unmask
