// moe_experts: the routed SwiGLU experts of one layer, without a host sync. Assignments (row, slot)
// are bucketed by expert on the device, two grouped GEMMs run over row tiles of one expert each,
// and a per-row reduction in slot order mixes the results (deterministic: no atomics on floats).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>

#include "common.cuh"
#include "moe_select.h"

namespace unmask::cuda {
namespace {

using cuda_plan::kMoeTileCols;
using cuda_plan::kMoeTileRows;
constexpr unsigned kFullMask = 0xffffffffu;

// --- bucketing ---------------------------------------------------------------------------------

constexpr int kBucketThreads = 1024;

// One block. Counts the assignments per expert, scans them into offsets, lays out the row tiles
// (tile_expert / tile_row / n_tiles) and writes perm, stable within an expert (assignment order),
// so the whole op is reproducible. A bad id raises kErrExpertId and is left out.
// Shared (int32): count [E] | cursor [E] | start [E] | tile_base [E].
__global__ void __launch_bounds__(kBucketThreads)
moe_bucket_kernel(const int32_t* ids, int assignments, int n_experts, int32_t* offsets, int32_t* perm,
                  int32_t* tile_expert, int32_t* tile_row, int32_t* n_tiles, int* error_word) {
  extern __shared__ int32_t bucket_sm[];
  const int E = n_experts;
  int32_t* count = bucket_sm;
  int32_t* cursor = count + E;
  int32_t* start = cursor + E;
  int32_t* tile_base = start + E;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  for (int e = tid; e < E; e += kBucketThreads) count[e] = 0;
  __syncthreads();
  bool bad = false;
  for (int a = tid; a < assignments; a += kBucketThreads) {
    const int32_t e = ids[a];
    if (e >= 0 && e < E)
      atomicAdd(&count[e], 1);
    else
      bad = true;
  }
  if (bad) atomicOr(error_word, kErrExpertId);
  __syncthreads();

  // Exclusive scans of the counts and of the tiles per expert: lane l scans a contiguous chunk,
  // the chunk totals are scanned across the warp.
  if (warp == 0) {
    const int per = (E + 31) / 32;
    const int begin = min(E, lane * per), end = min(E, begin + per);
    int rows = 0, tiles = 0;
    for (int e = begin; e < end; e++) {
      rows += count[e];
      tiles += (count[e] + kMoeTileRows - 1) / kMoeTileRows;
    }
    int rows_incl = rows, tiles_incl = tiles;
    for (int o = 1; o < 32; o <<= 1) {
      const int r = __shfl_up_sync(kFullMask, rows_incl, o);
      const int t = __shfl_up_sync(kFullMask, tiles_incl, o);
      if (lane >= o) {
        rows_incl += r;
        tiles_incl += t;
      }
    }
    int row_at = rows_incl - rows, tile_at = tiles_incl - tiles;
    for (int e = begin; e < end; e++) {
      offsets[e] = start[e] = cursor[e] = row_at;
      tile_base[e] = tile_at;
      row_at += count[e];
      tile_at += (count[e] + kMoeTileRows - 1) / kMoeTileRows;
    }
    if (lane == 31) {
      offsets[E] = rows_incl;
      *n_tiles = tiles_incl;
    }
  }
  __syncthreads();

  if (warp == 0) {
    // Stable placement, 32 assignments at a time: lanes with the same expert take consecutive
    // places in lane order after the places earlier rounds used.
    const unsigned lanes_below = (1u << lane) - 1u;
    for (int base = 0; base < assignments; base += 32) {
      const int a = base + lane;
      const int32_t id = a < assignments ? ids[a] : -1;
      const bool valid = id >= 0 && id < E;
      const unsigned peers = __match_any_sync(kFullMask, valid ? id : -1);
      const int leader = __ffs(peers) - 1;
      int at = 0;
      if (valid && lane == leader) at = cursor[id];
      at = __shfl_sync(kFullMask, at, leader);
      if (valid) perm[at + __popc(peers & lanes_below)] = a;
      __syncwarp();
      if (valid && lane == leader) cursor[id] = at + __popc(peers);
      __syncwarp();
    }
  } else {
    // Meanwhile the other warps lay out the row tiles.
    for (int e = tid - 32; e < E; e += kBucketThreads - 32) {
      const int tiles = (count[e] + kMoeTileRows - 1) / kMoeTileRows;
      for (int j = 0; j < tiles; j++) {
        tile_expert[tile_base[e] + j] = e;
        tile_row[tile_base[e] + j] = start[e] + j * kMoeTileRows;
      }
    }
  }
}

// --- grouped GEMM ------------------------------------------------------------------------------

constexpr int kGemmThreads = 256;
constexpr int kTileK = 16;
constexpr int kTM = kMoeTileRows / 16, kTN = kMoeTileCols / 16;  // outputs per thread: kTM x kTN
static_assert(kGemmThreads == 16 * 16 && kMoeTileRows * kTileK == 4 * kGemmThreads &&
                  kMoeTileCols * kTileK == 4 * kGemmThreads,
              "each thread loads 4 elements of every tile");

__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ float widen(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float widen(__half v) { return __half2float(v); }

struct GemmArgs {
  const float* a;  // kGateUp: x [n, k] read through perm; else h [assignments, k] in sorted order
  int64_t a_ld;
  int top_k;
  const int32_t* perm;
  const int32_t* offsets;
  const int32_t* tile_expert;
  const int32_t* tile_row;
  const int32_t* n_tiles;
  const void* const* weights;  // [n_experts] (down), or gate [n_experts] then up [n_experts]
  int n_experts;
  int k;  // reduction length
  int n;  // output columns
  float* out;  // kGateUp: h [assignments, n], sorted order; else y [assignments, n] by assignment
};

// One block: row tile blockIdx.x of the schedule (up to kMoeTileRows sorted assignments of one
// expert), output columns [blockIdx.y * kMoeTileCols, +kMoeTileCols). C = A · Wᵀ with W [n, k] of
// type T widened to f32 on its way into shared memory, f32 FMA accumulation. Thread (ty, tx) owns
// rows ty + 16 i and columns tx + 16 j, so shared reads are broadcasts or conflict-free.
// kGateUp: two weights (gate, up) on the same A tile, epilogue silu(gate) * up; else one (down).
template <class T, bool kGateUp>
__global__ void __launch_bounds__(kGemmThreads) moe_gemm_kernel(GemmArgs g) {
  const int tile = blockIdx.x;
  if (tile >= *g.n_tiles) return;  // the schedule is shorter than the worst case
  const int e = g.tile_expert[tile];
  const int r0 = g.tile_row[tile];
  const int rows = min(kMoeTileRows, g.offsets[e + 1] - r0);
  const int c0 = blockIdx.y * kMoeTileCols;
  const T* w0 = static_cast<const T*>(g.weights[e]);
  const T* w1 = kGateUp ? static_cast<const T*>(g.weights[g.n_experts + e]) : nullptr;

  // [k][row] with a pad against store conflicts.
  __shared__ float as[kTileK][kMoeTileRows + 1];
  __shared__ float bs0[kTileK][kMoeTileCols + 1];
  __shared__ float bs1[kGateUp ? kTileK : 1][kGateUp ? kMoeTileCols + 1 : 1];

  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  // Loads: element q of this thread is row/column tid / kTileK + 16 q, k index tid % kTileK.
  const int load_kk = tid % kTileK, load_r = tid / kTileK;
  const float* a_row[4];
#pragma unroll
  for (int q = 0; q < 4; q++) {
    const int r = load_r + 16 * q;
    a_row[q] = nullptr;
    if (r < rows) {
      const int sorted = r0 + r;
      const int64_t src = kGateUp ? g.perm[sorted] / g.top_k : sorted;
      a_row[q] = g.a + src * g.a_ld;
    }
  }

  float acc0[kTM][kTN] = {}, acc1[kTM][kTN] = {};
  for (int k0 = 0; k0 < g.k; k0 += kTileK) {
    const int kk = k0 + load_kk;
    const bool k_in = kk < g.k;
#pragma unroll
    for (int q = 0; q < 4; q++) {
      const int r = load_r + 16 * q;
      as[load_kk][r] = a_row[q] && k_in ? a_row[q][kk] : 0.f;
      const int c = c0 + r;
      const bool in = k_in && c < g.n;
      const int64_t w_at = static_cast<int64_t>(c) * g.k + kk;
      bs0[load_kk][r] = in ? widen(w0[w_at]) : 0.f;
      if constexpr (kGateUp) bs1[load_kk][r] = in ? widen(w1[w_at]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTileK; k++) {
      float av[kTM], bv0[kTN], bv1[kTN];
#pragma unroll
      for (int i = 0; i < kTM; i++) av[i] = as[k][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < kTN; j++) {
        bv0[j] = bs0[k][tx + 16 * j];
        if constexpr (kGateUp) bv1[j] = bs1[k][tx + 16 * j];
      }
#pragma unroll
      for (int i = 0; i < kTM; i++)
#pragma unroll
        for (int j = 0; j < kTN; j++) {
          acc0[i][j] = fmaf(av[i], bv0[j], acc0[i][j]);
          if constexpr (kGateUp) acc1[i][j] = fmaf(av[i], bv1[j], acc1[i][j]);
        }
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < kTM; i++) {
    const int r = ty + 16 * i;
    if (r >= rows) continue;
    const int sorted = r0 + r;
    const int64_t dst = kGateUp ? sorted : g.perm[sorted];
    float* out_row = g.out + dst * g.n;
#pragma unroll
    for (int j = 0; j < kTN; j++) {
      const int c = c0 + tx + 16 * j;
      if (c >= g.n) continue;
      if constexpr (kGateUp) {
        const float gate = acc0[i][j];
        // note: the swiglu kernel's rounding (and the CPU's): g / (1 + exp(-g)) * up.
        out_row[c] = __fmul_rn(__fdiv_rn(gate, __fadd_rn(1.f, expf(-gate))), acc1[i][j]);
      } else {
        out_row[c] = acc0[i][j];
      }
    }
  }
}

// --- mixing ------------------------------------------------------------------------------------

constexpr int kCombineThreads = 256;

// out[r, c] = sum_t weights[r, t] * y[r * top_k + t, c], t in slot order; bad ids contribute 0.
__global__ void moe_combine_kernel(const float* y, const int32_t* ids, const float* weights, int top_k,
                                   int n_experts, int64_t rows, int64_t d, float* out, int64_t out_ld) {
  const int64_t total = rows * d;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / d, c = i - r * d;
    float acc = 0.f;
    for (int t = 0; t < top_k; t++) {
      const int64_t a = r * top_k + t;
      const int32_t e = ids[a];
      if (e >= 0 && e < n_experts) acc += weights[a] * y[a * d + c];
    }
    out[r * out_ld + c] = acc;
  }
}

template <class T>
void launch_gemms(Context& ctx, const GemmArgs& gate_up, const GemmArgs& down, unsigned tiles) {
  const dim3 grid_gate_up(tiles, static_cast<unsigned>((gate_up.n + kMoeTileCols - 1) / kMoeTileCols));
  moe_gemm_kernel<T, true><<<grid_gate_up, kGemmThreads, 0, ctx.stream>>>(gate_up);
  CUDA_CHECK_LAUNCH();
  const dim3 grid_down(tiles, static_cast<unsigned>((down.n + kMoeTileCols - 1) / kMoeTileCols));
  moe_gemm_kernel<T, false><<<grid_down, kGemmThreads, 0, ctx.stream>>>(down);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void moe_check(const Tensor& x, int top_k, const ExpertWeights& experts, const Tensor& out) {
  const size_t n_experts = experts.gate.size();
  UNMASK_CHECK(n_experts >= 1 && n_experts <= static_cast<size_t>(moe::kMaxExperts) &&
                   experts.up.size() == n_experts && experts.down.size() == n_experts,
               "moe_experts: " << experts.gate.size() << " gate, " << experts.up.size() << " up and "
                               << experts.down.size() << " down weights (want 1.." << moe::kMaxExperts
                               << ", equal)");
  UNMASK_CHECK(x.dtype == DType::F32 && out.dtype == DType::F32, "moe_experts: activations must be F32");
  UNMASK_CHECK(out.rows == x.rows && out.cols == x.cols, "moe_experts: out must have x's shape");
  UNMASK_CHECK(top_k >= 1, "moe_experts: top_k " << top_k << " must be positive");
  const int64_t d = x.cols, hidden = experts.gate[0].rows;
  const DType dtype = experts.gate[0].dtype;
  UNMASK_CHECK(dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16,
               "moe_experts: expert weights of dtype " << dtype_name(dtype) << " are not supported");
  UNMASK_CHECK(hidden >= 1 && hidden <= INT_MAX && d >= 1 && d <= INT_MAX,
               "moe_experts: expert widths out of range");
  for (size_t e = 0; e < n_experts; e++) {
    const Tensor& g = experts.gate[e];
    const Tensor& u = experts.up[e];
    const Tensor& w = experts.down[e];
    UNMASK_CHECK(g.rows == hidden && g.cols == d && u.rows == hidden && u.cols == d && w.rows == d &&
                     w.cols == hidden,
                 "moe_experts: expert " << e << " is not [" << hidden << ", " << d << "] / [" << d << ", "
                                        << hidden << "]");
    UNMASK_CHECK(g.dtype == dtype && u.dtype == dtype && w.dtype == dtype,
                 "moe_experts: the experts of one layer must share a dtype");
    UNMASK_CHECK(g.data && u.data && w.data, "moe_experts: expert " << e << " has no data");
  }
  UNMASK_CHECK(x.rows * top_k <= INT_MAX, "moe_experts: more than 2^31 assignments");
}

namespace {

// One pass over rows [0, rows) of x / ids / weights / out (a chunk); plan sized for >= rows.
void moe_chunk(Context& ctx, const float* x, int64_t x_ld, int64_t rows, const int32_t* expert_ids,
               const float* expert_weights, int top_k, const ExpertWeights& experts,
               const void* const* weight_table, const cuda_plan::MoePlan& plan, void* scratch, float* out,
               int64_t out_ld) {
  const int n_experts = static_cast<int>(experts.gate.size());
  const int d = static_cast<int>(experts.gate[0].cols), hidden = static_cast<int>(experts.gate[0].rows);
  const int assignments = static_cast<int>(rows * top_k);
  char* base = static_cast<char*>(scratch);
  auto ints = [base](size_t offset) { return reinterpret_cast<int32_t*>(base + offset); };
  int32_t* offsets = ints(plan.offsets);
  int32_t* perm = ints(plan.perm);
  int32_t* tile_expert = ints(plan.tile_expert);
  int32_t* tile_row = ints(plan.tile_row);
  int32_t* n_tiles = ints(plan.n_tiles);
  float* h = reinterpret_cast<float*>(base + plan.hidden);
  float* y = reinterpret_cast<float*>(base + plan.y);

  const size_t bucket_smem = 4 * static_cast<size_t>(n_experts) * sizeof(int32_t);
  moe_bucket_kernel<<<1, kBucketThreads, bucket_smem, ctx.stream>>>(
      expert_ids, assignments, n_experts, offsets, perm, tile_expert, tile_row, n_tiles, ctx.error_word);
  CUDA_CHECK_LAUNCH();

  GemmArgs gate_up;
  gate_up.a = x;
  gate_up.a_ld = x_ld;
  gate_up.top_k = top_k;
  gate_up.perm = perm;
  gate_up.offsets = offsets;
  gate_up.tile_expert = tile_expert;
  gate_up.tile_row = tile_row;
  gate_up.n_tiles = n_tiles;
  gate_up.weights = weight_table;
  gate_up.n_experts = n_experts;
  gate_up.k = d;
  gate_up.n = hidden;
  gate_up.out = h;
  GemmArgs down = gate_up;
  down.a = h;
  down.a_ld = hidden;
  down.weights = weight_table + 2 * n_experts;
  down.k = hidden;
  down.n = d;
  down.out = y;
  const unsigned tiles = static_cast<unsigned>(plan.max_tiles);
  switch (experts.gate[0].dtype) {
    case DType::BF16: launch_gemms<__nv_bfloat16>(ctx, gate_up, down, tiles); break;
    case DType::F16: launch_gemms<__half>(ctx, gate_up, down, tiles); break;
    default: launch_gemms<float>(ctx, gate_up, down, tiles); break;
  }

  const int64_t total = rows * d;
  const int64_t cap = int64_t{std::max(ctx.sm_count, 1)} * 32;
  const unsigned blocks =
      static_cast<unsigned>(std::max<int64_t>(1, std::min((total + kCombineThreads - 1) / kCombineThreads, cap)));
  moe_combine_kernel<<<blocks, kCombineThreads, 0, ctx.stream>>>(y, expert_ids, expert_weights, top_k, n_experts,
                                                                rows, d, out, out_ld);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void moe_experts(Context& ctx, const Tensor& x, const int32_t* expert_ids, const float* expert_weights,
                 int top_k, const ExpertWeights& experts, const void* const* weight_table,
                 const cuda_plan::MoePlan& plan, void* scratch, Tensor& out) {
  const int64_t chunk = plan.assignments / top_k;
  UNMASK_CHECK(plan.max_tiles <= INT_MAX && chunk >= 1, "moe_experts: bad scratch plan");
  for (int64_t r0 = 0; r0 < x.rows; r0 += chunk) {
    const int64_t rows = std::min(chunk, x.rows - r0);
    moe_chunk(ctx, x.f32() + r0 * x.cols, x.cols, rows, expert_ids + r0 * top_k, expert_weights + r0 * top_k,
              top_k, experts, weight_table, plan, scratch, out.f32() + r0 * out.cols, out.cols);
  }
}

}  // namespace unmask::cuda
