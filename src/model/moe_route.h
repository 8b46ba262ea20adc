// Mixture-of-experts routing of one token on the host: the CPU backend's moe_route and the
// tests' oracle for the CUDA kernel.
#pragma once

#include <cstdint>
#include <vector>

#include "model/backend.h"

namespace unmask {

// Routes one token: logits [router.n_experts] (x · W_gateᵀ in fp32), bias [n_experts] or null
// -> ids [router.top_k] (distinct, in selection order: best first) and weights [top_k].
// Semantics (LLaDA2MoeGate in modeling_llada2_moe.py, LLaDA-MoE's modeling_lladamoe.py): scores s = sigmoid or softmax of the logits; the selection
// ranks s + bias; with groups, a group scores the sum of its two best ranked scores and only
// the topk_group best groups compete; weights are s (or s + bias when bias_in_weights) of the
// chosen, renormalised (/ (sum + 1e-20)) when asked and top_k > 1, times scale. Ties go to the
// lower index, for experts and groups alike. `scratch` is reused between calls.
void route_token(const float* logits, const float* bias, const MoeRouter& router, int32_t* ids,
                 float* weights, std::vector<float>& scratch);

}  // namespace unmask
