// moe_route: one warp per row turns router logits into top_k (expert id, weight) pairs on the device.
#include <cuda_runtime.h>

#include <climits>

#include "common.cuh"
#include "moe_select.h"

namespace unmask::cuda {
namespace {

using namespace unmask::moe;

constexpr int kWarps = 4;  // rows per block
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// The warp's best candidate: every lane proposes (v, i), every lane gets the winner. beats() is a
// total order on distinct indices, so the butterfly's pairing order does not change the result.
__device__ __forceinline__ void warp_best(float& v, int& i) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(kFullMask, v, o);
    const int oi = __shfl_xor_sync(kFullMask, i, o);
    if (beats(ov, oi, v, i)) {
      v = ov;
      i = oi;
    }
  }
}

// Row r = blockIdx.x * kWarps + warp. Shared per warp (floats): weight source [E] | selection
// values [E] | group scores [n_group]. Lanes own experts lane + 32 i; lane t writes slot t.
__global__ void __launch_bounds__(kWarps * 32)
moe_route_kernel(const float* logits, int64_t ld, int64_t rows, const float* bias, MoeRouter r,
                 int32_t* ids, float* weights) {
  extern __shared__ float smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (row >= rows) return;  // whole warps leave; the kernel has no block-wide barrier
  const int E = r.n_experts;
  float* score = smem + static_cast<size_t>(warp) * (2 * E + r.n_group);
  float* sel = score + E;
  float* group = sel + E;
  const float* x = logits + row * ld;

  if (r.score == RouterScore::Softmax) {
    float mx = -INFINITY;
    for (int e = lane; e < E; e += 32) mx = fmaxf(mx, x[e]);
    mx = warp_max(mx);
    float sum = 0.f;
    for (int e = lane; e < E; e += 32) sum += expf(x[e] - mx);
    sum = warp_sum(sum);
    for (int e = lane; e < E; e += 32) score[e] = expf(x[e] - mx) / sum;
  } else {
    for (int e = lane; e < E; e += 32) score[e] = sigmoid(x[e]);
  }
  for (int e = lane; e < E; e += 32) {
    const float biased = score[e] + (bias ? bias[e] : 0.f);
    sel[e] = selectable(biased);
    score[e] = raw_weight(r, score[e], biased);
  }
  __syncwarp();

  if (uses_groups(r)) {
    const int size = E / r.n_group;
    if (lane < r.n_group) {
      float t1 = -INFINITY, t2 = -INFINITY;
      for (int j = 0; j < size; j++) top2_push(sel[lane * size + j], t1, t2);
      group[lane] = selectable(t1 + t2);
    }
    __syncwarp();
    // Lane g holds group g; topk_group rounds of a warp argmax over the groups not yet kept.
    bool kept = false;
    const float mine = lane < r.n_group ? group[lane] : -INFINITY;
    for (int t = 0; t < r.topk_group; t++) {
      const bool open = lane < r.n_group && !kept;
      float v = open ? mine : -INFINITY;
      int i = open ? lane : INT_MAX;
      warp_best(v, i);
      if (i == lane) kept = true;
    }
    const unsigned kept_groups = __ballot_sync(kFullMask, kept);
    for (int e = lane; e < E; e += 32)
      if (!((kept_groups >> (e / size)) & 1u)) sel[e] = -INFINITY;
    __syncwarp();
  }

  // top_k rounds of a warp argmax; each lane remembers which of its experts are taken.
  uint32_t taken = 0;
  int32_t my_id = 0;
  float my_weight = 0.f;
  for (int t = 0; t < r.top_k; t++) {
    float v = -INFINITY;
    int i = INT_MAX;
    for (int e = lane, k = 0; e < E; e += 32, k++)
      if (!((taken >> k) & 1u) && beats(sel[e], e, v, i)) {
        v = sel[e];
        i = e;
      }
    warp_best(v, i);
    if ((i & 31) == lane) taken |= 1u << (i >> 5);
    if (lane == t) {
      my_id = i;
      my_weight = score[i];
    }
  }
  // The sum in slot order, as the host model adds them.
  float sum = 0.f;
  for (int t = 0; t < r.top_k; t++) sum += __shfl_sync(kFullMask, my_weight, t);
  if (lane < r.top_k) {
    ids[row * r.top_k + lane] = my_id;
    weights[row * r.top_k + lane] = final_weight(r, my_weight, sum);
  }
}

}  // namespace

void moe_route(Context& ctx, const Tensor& router_logits, const float* expert_bias, const MoeRouter& router,
               int32_t* expert_ids, float* expert_weights) {
  const std::string problem = router_problem(router);
  UNMASK_CHECK(problem.empty(), "moe_route: " << problem);
  UNMASK_CHECK(router_logits.dtype == DType::F32 && router_logits.cols == router.n_experts,
               "moe_route: router logits must be F32 [n, " << router.n_experts << "], got ["
                   << router_logits.rows << ", " << router_logits.cols << "]");
  const int64_t rows = router_logits.rows;
  if (rows == 0) return;
  const int64_t blocks = (rows + kWarps - 1) / kWarps;
  UNMASK_CHECK(blocks <= INT_MAX, "moe_route: too many rows");
  const size_t smem = static_cast<size_t>(kWarps) * (2 * router.n_experts + router.n_group) * sizeof(float);
  moe_route_kernel<<<static_cast<unsigned>(blocks), kWarps * 32, smem, ctx.stream>>>(
      router_logits.f32(), router_logits.cols, rows, expert_bias, router, expert_ids, expert_weights);
  CUDA_CHECK_LAUNCH();
}

}  // namespace unmask::cuda
