// Host routing of one token (moe_route.h).
#include "model/moe_route.h"

#include <cmath>
#include <limits>

namespace unmask {

namespace {

// Index of the largest of values[0, n) not yet taken; ties to the lower index.
int best_untaken(const float* values, int n, const std::vector<bool>& taken) {
  int best = -1;
  for (int i = 0; i < n; i++)
    if (!taken[static_cast<size_t>(i)] && (best < 0 || values[i] > values[best])) best = i;
  return best;
}

}  // namespace

void route_token(const float* logits, const float* bias, const MoeRouter& router, int32_t* ids,
                 float* weights, std::vector<float>& scratch) {
  const int n = router.n_experts;
  scratch.resize(static_cast<size_t>(2 * n + router.n_group));
  float* score = scratch.data();          // s
  float* ranked = score + n;              // s + bias, -inf outside the kept groups
  float* group_score = ranked + n;
  if (router.score == RouterScore::Sigmoid) {
    for (int e = 0; e < n; e++) score[e] = 1.f / (1.f + std::exp(-logits[e]));
  } else {
    float mx = -std::numeric_limits<float>::infinity();
    for (int e = 0; e < n; e++) mx = std::max(mx, logits[e]);
    double sum = 0;
    for (int e = 0; e < n; e++) sum += score[e] = std::exp(logits[e] - mx);
    for (int e = 0; e < n; e++) score[e] = static_cast<float>(score[e] / sum);
  }
  // note: a NaN ranks last (as on CUDA), so a non-finite row still routes deterministically; the
  // sampler reports its non-finite logits.
  for (int e = 0; e < n; e++) {
    ranked[e] = score[e] + (bias ? bias[e] : 0.f);
    if (std::isnan(ranked[e])) ranked[e] = -std::numeric_limits<float>::infinity();
  }

  if (router.topk_group < router.n_group) {
    const int per_group = n / router.n_group;
    for (int g = 0; g < router.n_group; g++) {
      // the sum of the group's two best ranked scores
      float first = -std::numeric_limits<float>::infinity(), second = first;
      for (int e = g * per_group; e < (g + 1) * per_group; e++) {
        if (ranked[e] > first) {
          second = first;
          first = ranked[e];
        } else if (ranked[e] > second) {
          second = ranked[e];
        }
      }
      group_score[g] = first + second;
    }
    std::vector<bool> kept(static_cast<size_t>(router.n_group), false);
    for (int i = 0; i < router.topk_group; i++)
      kept[static_cast<size_t>(best_untaken(group_score, router.n_group, kept))] = true;
    for (int e = 0; e < n; e++)
      if (!kept[static_cast<size_t>(e / per_group)]) ranked[e] = -std::numeric_limits<float>::infinity();
  }

  std::vector<bool> taken(static_cast<size_t>(n), false);
  double sum = 0;
  for (int t = 0; t < router.top_k; t++) {
    const int e = best_untaken(ranked, n, taken);
    taken[static_cast<size_t>(e)] = true;
    ids[t] = e;
    weights[t] = router.bias_in_weights ? ranked[e] : score[e];
    sum += weights[t];
  }
  for (int t = 0; t < router.top_k; t++) {
    if (router.renormalize && router.top_k > 1) weights[t] = static_cast<float>(weights[t] / (sum + 1e-20));
    weights[t] *= router.scale;
  }
}

}  // namespace unmask
