// GQA attention over ragged batches, bidirectional or block-causal: query tiles, K/V tiles in shared memory,
// online softmax.
#include <cuda_runtime.h>

#include <cmath>

#include "common.cuh"

namespace unmask::cuda {
namespace {

using cuda_plan::kAttentionThreads;
constexpr int kWarps = kAttentionThreads / 32;

// One block: sequence blockIdx.z, query head blockIdx.y, queries [blockIdx.x * QT, +QT) of that
// sequence. Keys stream through shared memory KT at a time; per query the block keeps the
// running max m, the running sum l and the unnormalised output acc (flash-attention's online
// softmax), so the [nq, nk] score matrix never exists. All math fp32.
// kBlockCausal: query i sees the keys [0, limit_i) of its sequence, limit_i = min(nk, (floor(p_i / B)
// + 1) * B) with p_i = q_positions[row] (a prefix, as blocks are aligned at position 0). The block
// streams only the keys some query of its tile sees, and each query's P·V stops at its own limit,
// so a key outside a query's range is never multiplied in (a KV cache slot may hold garbage there).
// The bidirectional instantiation is the kernel as it was before block-causal masks existed.
// Shared layout (floats): Q [QT][hd] | K [KT][hd+1] | V [KT][hd] | S [QT][KT] | m, l, alpha [QT]
// | limit [QT] (int32).
template <int QT, int KT, int ACC, bool kBlockCausal>
__global__ void __launch_bounds__(kAttentionThreads)
attention_kernel(const float* q, const float* k, const float* v, float* out,
                 const int32_t* q_start, const int32_t* kv_start, const int32_t* kv_end,
                 const int32_t* q_positions, int block_size,
                 int64_t q_ld, int64_t kv_ld, int64_t out_ld, int head_dim, int group, float scale) {
  static_assert(kAttentionThreads % KT == 0 && QT % (kAttentionThreads / KT) == 0, "tile shape");
  extern __shared__ float smem[];
  const int seq = blockIdx.z, head = blockIdx.y, kv_head = head / group;
  const int q0 = q_start[seq], nq = q_start[seq + 1] - q0;
  const int tile0 = blockIdx.x * QT;
  if (tile0 >= nq) return;  // this sequence is shorter than the longest one
  const int k0 = kv_start[seq], nk = (kv_end ? kv_end[seq] : kv_start[seq + 1]) - k0;
  const int hd = head_dim, k_stride = hd + 1;
  float* qs = smem;               // [QT][hd]
  float* ks = qs + QT * hd;       // [KT][hd + 1]: the pad spreads a column over all banks
  float* vs = ks + KT * k_stride; // [KT][hd]
  float* ss = vs + KT * hd;       // [QT][KT] scores, then probabilities
  float* row_m = ss + QT * KT;    // [QT]
  float* row_l = row_m + QT;      // [QT]
  float* row_alpha = row_l + QT;  // [QT] rescale of acc for this tile
  int32_t* row_limit = reinterpret_cast<int32_t*>(row_alpha + QT);  // [QT] keys each query sees
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  for (int e = tid; e < QT * hd; e += kAttentionThreads) {
    const int i = e / hd, d = e - i * hd;
    qs[e] = tile0 + i < nq ? q[(q0 + tile0 + i) * q_ld + head * hd + d] : 0.f;
  }
  if (tid < QT) {
    row_m[tid] = -INFINITY;
    row_l[tid] = 0.f;
    if constexpr (kBlockCausal) {
      // Rows past the sequence see nothing (they are never written out).
      int64_t limit = 0;
      if (tile0 + tid < nq) {
        const int64_t p = max(q_positions[q0 + tile0 + tid], 0);
        limit = min(static_cast<int64_t>(nk), (p / block_size + 1) * block_size);
      }
      row_limit[tid] = static_cast<int32_t>(limit);
    }
  }
  // Keys streamed: the union of the tile's ranges, which is the longest prefix among them.
  int nk_tile = nk;
  if constexpr (kBlockCausal) {
    __syncthreads();
    nk_tile = 0;
    for (int i = 0; i < QT; i++) nk_tile = max(nk_tile, row_limit[i]);
  }
  // Output entries of this thread: e = tid + a * threads, query e / hd, dim e % hd.
  float acc[ACC];
#pragma unroll
  for (int a = 0; a < ACC; a++) acc[a] = 0.f;

  constexpr int kRowStep = kAttentionThreads / KT;  // query rows between one thread's scores
  constexpr int kRows = QT / kRowStep;               // scores per thread per tile
  const int j_own = tid % KT, i_own = tid / KT;

  for (int kt = 0; kt < nk_tile; kt += KT) {
    __syncthreads();  // the previous tile is consumed; Q and the stats are visible
    for (int e = tid; e < KT * hd; e += kAttentionThreads) {
      const int j = e / hd, d = e - j * hd;
      const bool valid = kt + j < nk_tile;
      const int64_t row = static_cast<int64_t>(k0 + kt + j) * kv_ld + kv_head * hd + d;
      ks[j * k_stride + d] = valid ? k[row] : 0.f;
      vs[j * hd + d] = valid ? v[row] : 0.f;
    }
    __syncthreads();

    // Scores: thread owns key j_own for queries i_own + r * kRowStep (a warp shares its queries,
    // so Q reads are broadcasts).
    float dot[kRows];
#pragma unroll
    for (int r = 0; r < kRows; r++) dot[r] = 0.f;
    for (int d = 0; d < hd; d++) {
      const float kd = ks[j_own * k_stride + d];
#pragma unroll
      for (int r = 0; r < kRows; r++) dot[r] += qs[(i_own + r * kRowStep) * hd + d] * kd;
    }
#pragma unroll
    for (int r = 0; r < kRows; r++) {
      const int i = i_own + r * kRowStep;
      const bool key_valid = kt + j_own < (kBlockCausal ? row_limit[i] : nk);
      ss[i * KT + j_own] = key_valid ? dot[r] * scale : -INFINITY;
    }
    __syncthreads();

    // Online softmax per query row, one warp per row.
    for (int i = warp; i < QT; i += kWarps) {
      float mx = -INFINITY;
      for (int j = lane; j < KT; j += 32) mx = fmaxf(mx, ss[i * KT + j]);
      for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_old = row_m[i];
      // Bidirectional: finite, as every tile holds a valid key. Block-causal: finite once the
      // first tile (key 0 is visible to every query) is in, except for rows past the sequence,
      // which see no key: there the shift 0 keeps every p and alpha at 0 instead of NaN.
      float m_new = fmaxf(m_old, mx);
      if constexpr (kBlockCausal) m_new = m_new == -INFINITY ? 0.f : m_new;
      float sum = 0.f;
      for (int j = lane; j < KT; j += 32) {
        const float pj = expf(ss[i * KT + j] - m_new);
        ss[i * KT + j] = pj;
        sum += pj;
      }
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      if (lane == 0) {
        const float alpha = expf(m_old - m_new);  // 0 on the first tile
        row_alpha[i] = alpha;
        row_l[i] = row_l[i] * alpha + sum;
        row_m[i] = m_new;
      }
    }
    __syncthreads();

    // acc = acc * alpha + P V
#pragma unroll
    for (int a = 0; a < ACC; a++) {
      const int e = tid + a * kAttentionThreads;
      if (e < QT * hd) {
        const int i = e / hd, d = e - i * hd;
        float o = acc[a] * row_alpha[i];
        const float* prow = ss + i * KT;
        // Block-causal: only this query's keys; a masked key's V is never read, so garbage there
        // cannot turn into 0 * NaN.
        const int j_end = kBlockCausal ? min(KT, row_limit[i] - kt) : KT;
        for (int j = 0; j < j_end; j++) o += prow[j] * vs[j * hd + d];
        acc[a] = o;
      }
    }
  }

#pragma unroll
  for (int a = 0; a < ACC; a++) {
    const int e = tid + a * kAttentionThreads;
    if (e < QT * hd) {
      const int i = e / hd, d = e - i * hd;
      if (tile0 + i < nq) {
        const float l = row_l[i];  // 0 only for a query without keys: output zeros
        out[(q0 + tile0 + i) * out_ld + head * hd + d] = l > 0.f ? acc[a] / l : 0.f;
      }
    }
  }
}

template <int V, bool kBlockCausal>
void launch_variant(Context& ctx, const cuda_plan::AttentionPlan& plan, dim3 grid, const Tensor& q,
                    const Tensor& k, const Tensor& v, const AttentionLayout& layout, int head_dim,
                    int group, Tensor& out) {
  constexpr cuda_plan::AttentionVariant kV = cuda_plan::kAttentionVariants[V];
  constexpr int kAcc = cuda_plan::attention_acc_per_thread(kV);
  auto kernel = attention_kernel<kV.q_tile, kV.kv_tile, kAcc, kBlockCausal>;
  if (!ctx.attention_ready[kBlockCausal][V]) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(ctx.smem_optin)));
    ctx.attention_ready[kBlockCausal][V] = true;
  }
  const float scale = 1.f / std::sqrt(static_cast<float>(head_dim));
  kernel<<<grid, kAttentionThreads, plan.smem_bytes, ctx.stream>>>(
      q.f32(), k.f32(), v.f32(), out.f32(), layout.q_start, layout.kv_start, layout.kv_end,
      layout.q_positions, layout.block_size, q.cols, k.cols, out.cols, head_dim, group, scale);
  CUDA_CHECK_LAUNCH();
}

template <bool kBlockCausal>
void launch(Context& ctx, const cuda_plan::AttentionPlan& plan, dim3 grid, const Tensor& q,
            const Tensor& k, const Tensor& v, const AttentionLayout& layout, int head_dim, int group,
            Tensor& out) {
  switch (plan.variant) {
    case 0: launch_variant<0, kBlockCausal>(ctx, plan, grid, q, k, v, layout, head_dim, group, out); break;
    case 1: launch_variant<1, kBlockCausal>(ctx, plan, grid, q, k, v, layout, head_dim, group, out); break;
    case 2: launch_variant<2, kBlockCausal>(ctx, plan, grid, q, k, v, layout, head_dim, group, out); break;
    default: fail_runtime("cuda attention: no kernel variant for head_dim " + std::to_string(head_dim));
  }
}

}  // namespace

void attention(Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
               const AttentionLayout& layout, int n_heads, int n_kv_heads, int head_dim,
               Tensor& out) {
  UNMASK_CHECK(n_heads > 0 && n_kv_heads > 0 && n_heads % n_kv_heads == 0,
               "attention: " << n_heads << " heads not a multiple of " << n_kv_heads << " KV heads");
  UNMASK_CHECK(q.cols >= int64_t{n_heads} * head_dim && k.cols >= int64_t{n_kv_heads} * head_dim &&
                   v.cols == k.cols && out.cols >= int64_t{n_heads} * head_dim,
               "attention: tensor widths do not match the head layout");
  UNMASK_CHECK(layout.block_size >= 0, "attention: negative block_size " << layout.block_size);
  UNMASK_CHECK(layout.block_size == 0 || layout.q_positions,
               "attention: a block-causal layout needs q_positions");
  if (layout.n_seqs == 0 || layout.max_q_len == 0) return;
  UNMASK_CHECK(layout.n_seqs <= 65535, "attention: more than 65535 sequences in one batch");
  cuda_plan::AttentionPlan plan;
  std::string why;
  if (!cuda_plan::attention_plan(head_dim, ctx.smem_optin, &plan, &why))
    fail_runtime("cuda attention: " + why);
  const dim3 grid((layout.max_q_len + plan.q_tile - 1) / plan.q_tile, n_heads, layout.n_seqs);
  const int group = n_heads / n_kv_heads;
  if (layout.block_size > 0)
    launch<true>(ctx, plan, grid, q, k, v, layout, head_dim, group, out);
  else
    launch<false>(ctx, plan, grid, q, k, v, layout, head_dim, group, out);
}

}  // namespace unmask::cuda
