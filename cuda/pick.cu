// pick: one thread block per logits row reduces it to a PickResult (CFG, bans, top-k/top-p, Gumbel;
// LLaDA's unfiltered statistics or Dream's filtered_confidence).
#include <cuda_runtime.h>

#include <cmath>

#include "common.cuh"
#include "pick_select.h"

namespace unmask::cuda {
namespace {

using namespace unmask::pick;

constexpr int kThreads = cuda_plan::kPickThreads;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xffffffffu;

struct Top2 {
  float t1, t2;
};
struct SumPair {
  double sum, tsum;  // sum exp(x - max), sum exp(x - max) * (x - max)
};

__device__ __forceinline__ float shfl(float x, int o) { return __shfl_xor_sync(kFullMask, x, o); }
__device__ __forceinline__ double shfl(double x, int o) { return __shfl_xor_sync(kFullMask, x, o); }
__device__ __forceinline__ int32_t shfl(int32_t x, int o) { return __shfl_xor_sync(kFullMask, x, o); }
__device__ __forceinline__ Top2 shfl(Top2 x, int o) { return {shfl(x.t1, o), shfl(x.t2, o)}; }
__device__ __forceinline__ SumPair shfl(SumPair x, int o) { return {shfl(x.sum, o), shfl(x.tsum, o)}; }
__device__ __forceinline__ Best shfl(Best x, int o) {
  Best b;
  b.score = shfl(x.score, o);
  b.index = shfl(x.index, o);
  b.value = shfl(x.value, o);
  return b;
}

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct OrOp {
  __device__ int32_t operator()(int32_t a, int32_t b) const { return a | b; }
};
struct Top2Op {
  __device__ Top2 operator()(Top2 a, Top2 b) const {
    top2_push(b.t1, a.t1, a.t2);
    top2_push(b.t2, a.t1, a.t2);
    return a;
  }
};
struct SumOp {
  __device__ SumPair operator()(SumPair a, SumPair b) const { return {a.sum + b.sum, a.tsum + b.tsum}; }
};
struct BestOp {
  __device__ Best operator()(Best a, Best b) const {
    merge_best(a, b);
    return a;
  }
};

// Everything the block shares; `slots` is the per-warp scratch of block_reduce.
struct Shared {
  uint32_t hist[kBins];
  unsigned long long mass[kBins];
  alignas(16) unsigned char slots[kWarps * 16];
  RankSelect rank;
  MassSelect mass_select;
  bool ok;
};

// Reduction over the block in a fixed order (deterministic); every thread gets the result.
template <class T, class Op>
__device__ T block_reduce(T v, Op op, Shared& sh) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, shfl(v, o));
  T* slots = reinterpret_cast<T*>(sh.slots);
  __syncthreads();  // the previous reduction's readers are done with the slots
  if ((threadIdx.x & 31) == 0) slots[threadIdx.x >> 5] = v;
  __syncthreads();
  T r = slots[0];
  for (int w = 1; w < kWarps; w++) r = op(r, slots[w]);
  return r;
}

// One row's view: CFG-combined, banned tokens at -inf.
struct Row {
  const float* cond;
  const float* uncond;  // null without CFG
  float w1;
  const int32_t* banned;  // shared memory
  int n_banned;

  // The CFG-combined logit, before the bans.
  __device__ float raw(int v) const { return uncond ? cfg_combine(cond[v], uncond[v], w1) : cond[v]; }
  // `x` = raw(v), or -inf when v is banned.
  __device__ float ban(int v, float x) const {
    for (int i = 0; i < n_banned; i++)
      if (banned[i] == v) x = -INFINITY;
    return x;
  }
  __device__ float operator()(int v) const { return ban(v, raw(v)); }
};

// A row holding a NaN or an infinity: the weights hold NaN/Inf or the activations overflowed.
// Nothing is chosen; the host ends the request with an error.
__device__ PickResult non_finite_result() {
  PickResult r;
  r.finite = false;
  return r;
}

// Histogram of digit `level` over the running candidates. key_of(v, &key) says whether v is a
// candidate and gives its key. Counts are aggregated per warp (logits share their top digits,
// so one bin takes most adds).
template <class KeyOf>
__device__ void histogram(int vocab, int level, uint32_t prefix, KeyOf key_of, Shared& sh) {
  for (int b = threadIdx.x; b < kBins; b += kThreads) sh.hist[b] = 0;
  __syncthreads();
  const int end = (vocab + kThreads - 1) / kThreads * kThreads;  // whole warps stay in the loop
  for (int v = threadIdx.x; v < end; v += kThreads) {
    uint32_t key = 0;
    const bool active = v < vocab && key_of(v, key) && in_running(level, prefix, key);
    const int d = active ? digit_of(level, key) : -1;
    const unsigned group = __match_any_sync(kFullMask, d);
    if (active && static_cast<int>(threadIdx.x & 31) == __ffs(group) - 1)
      atomicAdd(&sh.hist[d], static_cast<uint32_t>(__popc(group)));
  }
  __syncthreads();
}

// Radix select (rank_step per digit); false only on an internal inconsistency.
template <class KeyOf>
__device__ bool rank_select(int vocab, uint32_t rank, KeyOf key_of, Shared& sh, RankSelect& out) {
  if (threadIdx.x == 0) {
    sh.rank = RankSelect{};
    sh.rank.rank = rank;
    sh.ok = true;
  }
  __syncthreads();
  for (int level = 0; level < kLevels; level++) {
    const uint32_t prefix = sh.rank.prefix;
    histogram(vocab, level, prefix, key_of, sh);
    if (threadIdx.x == 0 && sh.ok) sh.ok = rank_step(sh.rank, sh.hist);
    __syncthreads();
  }
  out = sh.rank;
  const bool ok = sh.ok;
  __syncthreads();  // thread 0 may reset sh.rank in the next call
  return ok;
}

// Dream's tempered view of a row: temper(row(v)), the values its order and statistics use.
struct TemperedRow {
  Row row;
  float temperature;

  __device__ float operator()(int v) const { return temper(row(v), temperature); }
};

// Index of the tie of rank `rank` (ascending index) among candidates with key `tie_key` inside
// `within`: a radix select on ~index. Keys are order_key(row(v)); Val is Row or TemperedRow.
template <class Val>
__device__ uint32_t select_tie(int vocab, const Val& row, uint32_t tie_key, const Boundary& within,
                               uint32_t rank, Shared& sh, bool& ok) {
  RankSelect rs;
  ok = rank_select(
      vocab, rank,
      [&](int v, uint32_t& ikey) {
        const uint32_t key = order_key(row(v));
        ikey = ~static_cast<uint32_t>(v);
        return key == tie_key && keeps(within, key, static_cast<uint32_t>(v));
      },
      sh, rs);
  return ~rs.prefix;
}

// Top-p descent over the candidates inside `top_k` (Boundary{}: all); returns the state after the
// last level.
// The top-k boundary: the k-th entry in "value desc, index asc", ties split by index.
template <class Val>
__device__ Boundary top_k_boundary(int vocab, const Val& row, int k, Shared& sh, bool& ok) {
  Boundary b;
  RankSelect rs;
  ok = rank_select(
      vocab, static_cast<uint32_t>(k - 1),
      [&](int v, uint32_t& key) {
        key = order_key(row(v));
        return true;
      },
      sh, rs);
  b.key = rs.prefix;
  if (ok && rs.rank + 1 < rs.count) b.index = select_tie(vocab, row, rs.prefix, Boundary{}, rs.rank, sh, ok);
  return b;
}

template <class Val>
__device__ MassSelect mass_select(int vocab, const Val& row, const Boundary& top_k, float mx,
                                  double kept_sum, uint64_t target, Shared& sh) {
  if (threadIdx.x == 0) sh.mass_select = MassSelect{};
  __syncthreads();
  MassSelect ms;
  for (int level = 0; level < kLevels; level++) {
    const uint32_t prefix = sh.mass_select.prefix;
    for (int b = threadIdx.x; b < kBins; b += kThreads) sh.hist[b] = 0, sh.mass[b] = 0;
    __syncthreads();
    for (int v = threadIdx.x; v < vocab; v += kThreads) {
      const float x = row(v);
      const uint32_t key = order_key(x);
      if (!keeps(top_k, key, static_cast<uint32_t>(v)) || !in_running(level, prefix, key)) continue;
      const int d = digit_of(level, key);
      atomicAdd(&sh.hist[d], 1u);
      // note: fixed point makes the bin sums exact, so atomics in any order give one answer.
      const uint64_t fixed = to_fixed(exp(static_cast<double>(x) - mx) / kept_sum);
      if (fixed) atomicAdd(&sh.mass[d], static_cast<unsigned long long>(fixed));
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      mass_step(sh.mass_select, sh.hist, reinterpret_cast<const uint64_t*>(sh.mass), target);
    }
    __syncthreads();
    ms = sh.mass_select;
    if (!ms.found) break;  // block-uniform
  }
  __syncthreads();
  return ms;
}

struct SumD {
  __device__ double operator()(double a, double b) const { return a + b; }
};

// The filtered_confidence mode (Dream's sample_tokens), step for step pick_row_model_filtered:
// boundaries on the tempered values, then the survivors' normaliser, top two and winner, then the
// entropy. Block-uniform; thread 0 writes *out. Not inlined: the kernel's LLaDA path keeps its
// register allocation (inlined, ptxas spilled more in both paths).
__device__ __noinline__ void pick_filtered_confidence(const Row& row, int vocab, const PickParams& p,
                                                      Shared& sh, PickResult* out) {
  const TemperedRow lt{row, p.temperature};
  const bool use_top_k = p.top_k > 0 && p.top_k < vocab;
  const bool use_top_p = p.top_p > 0.f && p.top_p < 1.f;

  // Pass 1: the tempered maximum, and whether the row is finite.
  float mx = -INFINITY;
  int32_t non_finite = 0;
  for (int v = threadIdx.x; v < vocab; v += kThreads) {
    const float x = row.raw(v);
    non_finite |= !isfinite(x);
    mx = fmaxf(mx, temper(row.ban(v, x), p.temperature));
  }
  mx = block_reduce(mx, MaxOp{}, sh);
  if (block_reduce(non_finite, OrOp{}, sh)) {
    if (threadIdx.x == 0) *out = non_finite_result();
    return;
  }
  if (mx == -INFINITY) {  // every token banned: the host reports it
    if (threadIdx.x == 0) *out = PickResult{};
    return;
  }

  bool ok = true;
  Boundary top_k, top_p;
  if (use_top_k) top_k = top_k_boundary(vocab, lt, p.top_k, sh, ok);
  if (ok && use_top_p) {
    // Pass 2: the full normaliser; top-p descends over every entry, "mass before <= top_p".
    double s = 0;
    for (int v = threadIdx.x; v < vocab; v += kThreads) s += exp(static_cast<double>(lt(v)) - mx);
    const double total = block_reduce(s, SumD{}, sh);
    const MassSelect ms =
        mass_select(vocab, lt, Boundary{}, mx, total, to_fixed(static_cast<double>(p.top_p)) + 1, sh);
    if (ms.found) {
      const double p_tie = exp(static_cast<double>(key_value(ms.prefix)) - mx) / total;
      const uint32_t keep =
          ties_kept_at_most(static_cast<double>(ms.above) / kFixedOne, p_tie, ms.count, p.top_p);
      top_p.key = ms.prefix;
      if (keep < ms.count) top_p.index = select_tie(vocab, lt, ms.prefix, Boundary{}, keep - 1, sh, ok);
    }
  }

  // Survivors: normaliser, top two (tempered) and the winner (raw value + T * Gumbel).
  double sum = 0;
  Top2 top2 = {-INFINITY, -INFINITY};
  Best best;
  for (int v = threadIdx.x; v < vocab; v += kThreads) {
    const float x = row(v), l = temper(x, p.temperature);
    const uint32_t key = order_key(l);
    if (!keeps(top_k, key, static_cast<uint32_t>(v)) || !keeps(top_p, key, static_cast<uint32_t>(v))) continue;
    top2_push(l, top2.t1, top2.t2);
    sum += exp(static_cast<double>(l) - mx);
    if (x != -INFINITY) {
      const float sc = pick_score(x, p, static_cast<uint32_t>(v));
      if (beats(sc, v, best)) best = {sc, v, x};
    }
  }
  sum = block_reduce(sum, SumD{}, sh);
  top2 = block_reduce(top2, Top2Op{}, sh);
  best = block_reduce(best, BestOp{}, sh);

  // Dream's entropy -sum q log(q + 1e-10) over the renormalised survivors.
  double neg_entropy = 0;
  for (int v = threadIdx.x; v < vocab; v += kThreads) {
    const float l = lt(v);
    const uint32_t key = order_key(l);
    if (!keeps(top_k, key, static_cast<uint32_t>(v)) || !keeps(top_p, key, static_cast<uint32_t>(v))) continue;
    const double q = exp(static_cast<double>(l) - mx) / sum;
    neg_entropy += q * log(q + 1e-10);
  }
  neg_entropy = block_reduce(neg_entropy, SumD{}, sh);

  if (threadIdx.x == 0) {
    PickResult res;
    if (ok && best.index >= 0) {
      res.token = best.index;
      res.prob = static_cast<float>(exp(static_cast<double>(temper(best.value, p.temperature)) - mx) / sum);
      res.margin = static_cast<float>(exp(static_cast<double>(top2.t1) - mx) / sum -
                                      exp(static_cast<double>(top2.t2) - mx) / sum);
      res.entropy = static_cast<float>(-neg_entropy);
    }
    *out = res;
  }
}

__global__ void __launch_bounds__(kThreads)
pick_kernel(const float* logits, int64_t ld, const float* uncond, int64_t uncond_ld, int vocab,
            const PickParams* params, const int32_t* banned, int n_banned, PickResult* out) {
  // note: raw storage, as __shared__ variables cannot have constructors.
  __shared__ alignas(16) unsigned char sh_raw[sizeof(Shared)];
  Shared& sh = *reinterpret_cast<Shared*>(sh_raw);
  extern __shared__ int32_t banned_sm[];
  const int r = blockIdx.x;
  const PickParams p = params[r];
  for (int i = threadIdx.x; i < n_banned; i += kThreads) banned_sm[i] = banned[i];
  Row row;
  row.cond = logits + r * ld;
  row.uncond = (p.cfg_scale > 0.f && uncond) ? uncond + static_cast<int64_t>(p.uncond_row) * uncond_ld
                                              : nullptr;
  row.w1 = p.cfg_scale + 1.f;
  // The row bans entries [first_banned, n) of the list (first_banned 1: the mask stays choosable).
  const int row_banned = p.n_banned < 0 ? n_banned : min(p.n_banned, n_banned);
  const int first_banned = min(max(p.first_banned, 0), row_banned);
  row.banned = banned_sm + first_banned;
  row.n_banned = row_banned - first_banned;
  __syncthreads();
  if (p.filtered_confidence) {  // block-uniform: one row per block
    pick_filtered_confidence(row, vocab, p, sh, out + r);
    return;
  }

  const bool use_top_k = p.top_k > 0 && p.top_k < vocab;
  const bool use_top_p = p.top_p > 0.f && p.top_p < 1.f;
  const bool filtered = use_top_k || use_top_p;

  // Pass 1: max, top two, the winner when nothing is filtered, and whether the row is finite.
  float mx = -INFINITY;
  Top2 top2 = {-INFINITY, -INFINITY};
  Best best;
  int32_t non_finite = 0;
  for (int v = threadIdx.x; v < vocab; v += kThreads) {
    const float raw = row.raw(v);
    non_finite |= !isfinite(raw);
    const float x = row.ban(v, raw);
    mx = fmaxf(mx, x);
    top2_push(x, top2.t1, top2.t2);
    if (!filtered && x != -INFINITY) {
      const float s = pick_score(x, p, static_cast<uint32_t>(v));
      if (beats(s, v, best)) best = {s, v, x};
    }
  }
  mx = block_reduce(mx, MaxOp{}, sh);
  top2 = block_reduce(top2, Top2Op{}, sh);
  if (!filtered) best = block_reduce(best, BestOp{}, sh);
  if (block_reduce(non_finite, OrOp{}, sh)) {
    if (threadIdx.x == 0) out[r] = non_finite_result();
    return;
  }
  if (mx == -INFINITY) {  // every token banned: the host reports it
    if (threadIdx.x == 0) out[r] = PickResult{};
    return;
  }

  // Pass 2: the softmax normaliser and the entropy's sum.
  SumPair sums = {0.0, 0.0};
  for (int v = threadIdx.x; v < vocab; v += kThreads) {
    const double d = static_cast<double>(row(v)) - mx;
    const double e = exp(d);
    if (e > 0) {
      sums.sum += e;
      sums.tsum += e * d;
    }
  }
  sums = block_reduce(sums, SumOp{}, sh);

  bool ok = true;
  if (filtered) {
    Boundary top_k, top_p;
    if (use_top_k) top_k = top_k_boundary(vocab, row, p.top_k, sh, ok);
    if (ok && use_top_p) {
      double kept_sum = sums.sum;
      if (use_top_k) {
        double s = 0;
        for (int v = threadIdx.x; v < vocab; v += kThreads) {
          const float x = row(v);
          if (keeps(top_k, order_key(x), static_cast<uint32_t>(v))) s += exp(static_cast<double>(x) - mx);
        }
        kept_sum = block_reduce(s, [](double a, double b) { return a + b; }, sh);
      }
      const MassSelect ms = mass_select(vocab, row, top_k, mx, kept_sum,
                                        to_fixed(static_cast<double>(p.top_p)), sh);
      if (ms.found) {
        const double p_tie = exp(static_cast<double>(key_value(ms.prefix)) - mx) / kept_sum;
        const uint32_t keep = ties_kept(static_cast<double>(ms.above) / kFixedOne, p_tie, ms.count, p.top_p);
        top_p.key = ms.prefix;
        if (keep < ms.count) top_p.index = select_tie(vocab, row, ms.prefix, top_k, keep - 1, sh, ok);
      }
    }
    // Final pass: the winner among the kept candidates.
    for (int v = threadIdx.x; v < vocab; v += kThreads) {
      const float x = row(v);
      const uint32_t key = order_key(x);
      if (x == -INFINITY || !keeps(top_k, key, static_cast<uint32_t>(v)) ||
          !keeps(top_p, key, static_cast<uint32_t>(v)))
        continue;
      const float s = pick_score(x, p, static_cast<uint32_t>(v));
      if (beats(s, v, best)) best = {s, v, x};
    }
    best = block_reduce(best, BestOp{}, sh);
  }

  if (threadIdx.x == 0) {
    PickResult res;
    if (ok && best.index >= 0) {
      const double sum = sums.sum;
      res.token = best.index;
      res.prob = static_cast<float>(exp(static_cast<double>(best.value) - mx) / sum);
      res.margin = static_cast<float>(exp(static_cast<double>(top2.t1) - mx) / sum -
                                      exp(static_cast<double>(top2.t2) - mx) / sum);
      res.entropy = static_cast<float>(log(sum) - sums.tsum / sum);
    }
    out[r] = res;
  }
}

}  // namespace

void pick(Context& ctx, const Tensor& logits, const Tensor* uncond, const PickParams* params,
          const int32_t* banned, int n_banned, PickResult* out) {
  if (logits.rows == 0) return;
  UNMASK_CHECK(logits.dtype == DType::F32 && logits.cols > 0 && logits.cols <= INT32_MAX,
               "pick: logits must be F32 with 1..2^31 columns");
  UNMASK_CHECK(!uncond || uncond->cols == logits.cols, "pick: uncond width mismatch");
  UNMASK_CHECK(logits.rows <= INT32_MAX, "pick: too many rows");
  const size_t banned_bytes = static_cast<size_t>(n_banned) * sizeof(int32_t);
  UNMASK_CHECK(banned_bytes + sizeof(Shared) <= 48 * 1024, "pick: " << n_banned << " banned ids is too many");
  pick_kernel<<<static_cast<unsigned>(logits.rows), kThreads, banned_bytes, ctx.stream>>>(
      logits.f32(), logits.cols, uncond && uncond->data ? uncond->f32() : nullptr,
      uncond ? uncond->cols : 0, static_cast<int>(logits.cols), params, banned, n_banned, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace unmask::cuda
