// Mixture-of-experts routing decisions, shared by the moe_route kernel and a sequential host model of
// it (route_row_model), which tests hold against the CPU backend's moe_route.
//
// Per row: scores s (sigmoid, or softmax in fp32), selection values s + bias; with groups, each group
// of n_experts / n_group consecutive experts scores the sum of its two best selection values and
// only the topk_group best groups stay selectable; then top_k experts by selection value. Order
// everywhere: higher value first, then lower index. NaN selects like -inf, so a row always gets
// top_k distinct experts (a NaN row then carries NaN weights, which the sampler reports).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "model/backend.h"
#include "model/rng.h"  // UNMASK_HOST_DEVICE

namespace unmask::moe {

// One warp routes a row: each lane keeps a 32-bit "taken" mask over its experts lane + 32 i, and
// the group selection has one lane per group.
constexpr int kMaxExperts = 1024;
constexpr int kMaxGroups = 32;
constexpr int kMaxTopK = 32;  // lane t holds slot t

// The value a candidate is ranked by.
UNMASK_HOST_DEVICE float selectable(float v) { return v != v ? -INFINITY : v; }

// Whether candidate (v, i) ranks before (best_v, best_i): higher value, then lower index.
UNMASK_HOST_DEVICE bool beats(float v, int i, float best_v, int best_i) {
  return v > best_v || (v == best_v && i < best_i);
}

UNMASK_HOST_DEVICE float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

// Keeps the two largest of the values pushed (as a multiset: a tie fills both).
UNMASK_HOST_DEVICE void top2_push(float v, float& t1, float& t2) {
  if (v > t1) {
    t2 = t1;
    t1 = v;
  } else if (v > t2) {
    t2 = v;
  }
}

// Whether the group limit changes anything.
UNMASK_HOST_DEVICE bool uses_groups(const MoeRouter& r) { return r.n_group > 1 && r.topk_group < r.n_group; }

// Empty when the kernels can route with `r`, else why not (one line).
inline std::string router_problem(const MoeRouter& r) {
  if (r.n_experts < 1 || r.n_experts > kMaxExperts)
    return "n_experts " + std::to_string(r.n_experts) + " outside [1, " + std::to_string(kMaxExperts) + "]";
  if (r.top_k < 1 || r.top_k > r.n_experts || r.top_k > kMaxTopK)
    return "top_k " + std::to_string(r.top_k) + " outside [1, min(n_experts, " + std::to_string(kMaxTopK) + ")]";
  if (r.n_group < 1 || r.n_group > kMaxGroups || r.n_experts % r.n_group != 0)
    return "n_group " + std::to_string(r.n_group) + " does not divide " + std::to_string(r.n_experts) +
           " experts (or is over " + std::to_string(kMaxGroups) + ")";
  if (r.topk_group < 1 || r.topk_group > r.n_group)
    return "topk_group " + std::to_string(r.topk_group) + " outside [1, n_group]";
  if (uses_groups(r)) {
    const int size = r.n_experts / r.n_group;
    // The group score is the sum of the two best experts, so a group needs two.
    if (size < 2) return "groups of " + std::to_string(size) + " expert (the group score needs 2)";
    if (r.top_k > r.topk_group * size)
      return "top_k " + std::to_string(r.top_k) + " exceeds the " + std::to_string(r.topk_group * size) +
             " experts of the kept groups";
  }
  return {};
}

// A chosen expert's mixing weight before normalisation: `score` is the unbiased score, `biased`
// score + bias.
UNMASK_HOST_DEVICE float raw_weight(const MoeRouter& r, float score, float biased) {
  return r.bias_in_weights ? biased : score;
}

// The final weight of slot w given the sum of the row's raw weights (slot order).
UNMASK_HOST_DEVICE float final_weight(const MoeRouter& r, float w, float sum) {
  if (r.renormalize && r.top_k > 1) w = w / (sum + 1e-20f);
  return w * r.scale;
}

// Sequential model of the kernel for one row: logits [n_experts], bias [n_experts] or null ->
// ids / weights [top_k], slots in selection order. `r` must pass router_problem.
inline void route_row_model(const float* logits, const float* bias, const MoeRouter& r, int32_t* ids,
                            float* weights) {
  const int E = r.n_experts;
  float score[kMaxExperts], sel[kMaxExperts];
  if (r.score == RouterScore::Softmax) {
    float mx = -INFINITY;
    for (int e = 0; e < E; e++) mx = fmaxf(mx, logits[e]);
    float sum = 0.f;
    for (int e = 0; e < E; e++) sum += expf(logits[e] - mx);
    for (int e = 0; e < E; e++) score[e] = expf(logits[e] - mx) / sum;
  } else {
    for (int e = 0; e < E; e++) score[e] = sigmoid(logits[e]);
  }
  for (int e = 0; e < E; e++) {
    const float biased = score[e] + (bias ? bias[e] : 0.f);
    sel[e] = selectable(biased);
    score[e] = raw_weight(r, score[e], biased);
  }
  if (uses_groups(r)) {
    const int size = E / r.n_group;
    float group[kMaxGroups];
    for (int g = 0; g < r.n_group; g++) {
      float t1 = -INFINITY, t2 = -INFINITY;
      for (int j = 0; j < size; j++) top2_push(sel[g * size + j], t1, t2);
      group[g] = selectable(t1 + t2);
    }
    bool kept[kMaxGroups] = {};
    for (int t = 0; t < r.topk_group; t++) {
      int best = -1;
      for (int g = 0; g < r.n_group; g++)
        if (!kept[g] && (best < 0 || beats(group[g], g, group[best], best))) best = g;
      kept[best] = true;
    }
    for (int e = 0; e < E; e++)
      if (!kept[e / size]) sel[e] = -INFINITY;
  }
  bool taken[kMaxExperts] = {};
  float sum = 0.f;
  for (int t = 0; t < r.top_k; t++) {
    int best = -1;
    for (int e = 0; e < E; e++)
      if (!taken[e] && (best < 0 || beats(sel[e], e, sel[best], best))) best = e;
    taken[best] = true;
    ids[t] = best;
    weights[t] = score[best];
    sum += weights[t];
  }
  for (int t = 0; t < r.top_k; t++) weights[t] = final_weight(r, weights[t], sum);
}

}  // namespace unmask::moe
