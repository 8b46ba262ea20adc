// Host-side sizing rules of the CUDA backend (scratch growth, staging, attention tiles); plain C++.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "io/tensor.h"

namespace unmask::cuda_plan {

constexpr size_t kMiB = size_t{1} << 20;

inline size_t round_up(size_t n, size_t align) { return (n + align - 1) / align * align; }

// Backend-internal scratch grows only when a request exceeds it: to the request rounded up to
// 1 MiB, at least 1.5x the old size so a slowly growing workload reallocates O(log n) times.
// Returns 0 when `current` already suffices.
inline size_t grow_bytes(size_t current, size_t needed) {
  if (needed <= current) return 0;
  const size_t target = needed > current + current / 2 ? needed : current + current / 2;
  return round_up(target, kMiB);
}

// Bytes of the 16-bit copy of the activations x [rows, in] that a bf16/f16 GEMM reads.
inline size_t matmul_scratch_bytes(int64_t rows, int64_t in, DType weight) {
  if (weight == DType::F32) return 0;
  return static_cast<size_t>(rows) * static_cast<size_t>(in) * 2;
}

// cuBLAS workspace handed over explicitly so the library never allocates inside a step
// (32 MiB is NVIDIA's recommendation for Hopper).
constexpr size_t kCublasWorkspaceBytes = 32 * kMiB;

// Pinned staging for small host->device uploads: copies are packed back to back between two
// host syncs (pick, download, synchronize reset the offset). Bigger ones go direct.
constexpr size_t kStagingAlign = 256;
constexpr size_t kStagingInitialBytes = 1 * kMiB;
constexpr size_t kStagingMaxBytes = 64 * kMiB;

struct StagingStep {
  bool direct = false;     // too big for staging: synchronous copy from the caller's memory
  bool sync_first = false; // the buffer is full of copies still in flight: wait, then restart at 0
  size_t grow_to = 0;      // reallocate the pinned buffer to this size first (after a sync)
  size_t offset = 0;       // where the bytes go in the (possibly new) buffer
};

inline StagingStep staging_step(size_t offset, size_t capacity, size_t bytes) {
  StagingStep s;
  if (bytes > kStagingMaxBytes) {
    s.direct = true;
    return s;
  }
  const size_t start = round_up(offset, kStagingAlign);
  if (start + bytes <= capacity) {
    s.offset = start;
    return s;
  }
  s.sync_first = true;
  if (bytes > capacity) {
    size_t target = capacity > 0 ? capacity : kStagingInitialBytes;
    while (target < bytes) target *= 2;
    s.grow_to = target < kStagingMaxBytes ? target : kStagingMaxBytes;
  }
  s.offset = 0;
  return s;
}

// Bulk weight uploads go through two pinned buffers of this size, alternating.
constexpr size_t kWeightChunkBytes = 16 * kMiB;

// --- attention tiles. One thread block per (sequence, head, query tile); K/V tiles stream
// through shared memory. Variants are compiled for head_dim up to 64, 128 and 256.
constexpr int kAttentionThreads = 256;

struct AttentionVariant {
  int max_head_dim;
  int q_tile;   // queries per block
  int kv_tile;  // keys per shared-memory tile
};
constexpr AttentionVariant kAttentionVariants[] = {{64, 32, 64}, {128, 32, 64}, {256, 16, 32}};
constexpr int kAttentionVariantCount = 3;

// Accumulator registers per thread: the block's output tile is [q_tile, head_dim].
constexpr int attention_acc_per_thread(const AttentionVariant& v) {
  return (v.q_tile * v.max_head_dim + kAttentionThreads - 1) / kAttentionThreads;
}

// Shared memory: Q [q_tile, hd], K [kv_tile, hd + 1] (padded against bank conflicts),
// V [kv_tile, hd], scores [q_tile, kv_tile], and per query the running max / sum / rescale and
// the block-causal key limit (an int32 in a float's slot).
inline size_t attention_smem_bytes(int head_dim, int q_tile, int kv_tile) {
  const size_t floats = static_cast<size_t>(q_tile) * head_dim +
                        static_cast<size_t>(kv_tile) * (head_dim + 1) +
                        static_cast<size_t>(kv_tile) * head_dim +
                        static_cast<size_t>(q_tile) * kv_tile + 4 * static_cast<size_t>(q_tile);
  return floats * sizeof(float);
}

struct AttentionPlan {
  int variant = -1;
  int q_tile = 0, kv_tile = 0;
  size_t smem_bytes = 0;
};

// The smallest variant that holds head_dim and fits the device's per-block shared memory
// (`smem_limit`: cudaDevAttrMaxSharedMemoryPerBlockOptin). False with the reason otherwise.
inline bool attention_plan(int head_dim, size_t smem_limit, AttentionPlan* plan, std::string* why) {
  if (head_dim <= 0) {
    *why = "head_dim " + std::to_string(head_dim) + " must be positive";
    return false;
  }
  for (int i = 0; i < kAttentionVariantCount; i++) {
    const AttentionVariant& v = kAttentionVariants[i];
    if (head_dim > v.max_head_dim) continue;
    const size_t smem = attention_smem_bytes(head_dim, v.q_tile, v.kv_tile);
    if (smem > smem_limit) continue;
    plan->variant = i;
    plan->q_tile = v.q_tile;
    plan->kv_tile = v.kv_tile;
    plan->smem_bytes = smem;
    return true;
  }
  *why = "head_dim " + std::to_string(head_dim) + " needs more than the " +
         std::to_string(smem_limit) + " bytes of shared memory per block this device has" +
         (head_dim > 256 ? " (the CUDA attention kernel supports head_dim <= 256)" : "");
  return false;
}

// --- pick: one block per logits row.
constexpr int kPickThreads = 512;

// --- MoE experts. The (row, slot) assignments are bucketed by expert on the device; grouped GEMMs
// then run one thread block per (row tile of one expert, column tile). How many row tiles there
// are is known only on the device, so the grid covers the worst case and surplus blocks exit.
constexpr int kMoeTileRows = 64;
constexpr int kMoeTileCols = 64;

// Where each array lives in the one MoE scratch buffer (byte offsets, 256-aligned), for
// `rows` x `top_k` assignments over `n_experts` experts of d_model -> hidden -> d_model.
struct MoePlan {
  int64_t assignments = 0;  // rows * top_k
  int64_t max_tiles = 0;    // bound on the row tiles of all experts together
  size_t offsets = 0;       // int32 [n_experts + 1]: expert e's sorted assignments [offsets[e], offsets[e+1])
  size_t perm = 0;          // int32 [assignments]: sorted position -> assignment (row * top_k + slot)
  size_t tile_expert = 0;   // int32 [max_tiles]: the expert of row tile t
  size_t tile_row = 0;      // int32 [max_tiles]: the first sorted position of row tile t
  size_t n_tiles = 0;       // int32: the row tiles in use
  size_t hidden = 0;        // f32 [assignments, hidden]: silu(gate x) * up x, sorted order
  size_t y = 0;             // f32 [assignments, d_model]: each assignment's expert output, unweighted
  size_t bytes = 0;
};

// sum_e ceil(c_e / T) <= floor(A / T) + (experts with c_e > 0), as each nonempty expert wastes
// under one tile; at most min(n_experts, A) are nonempty.
inline int64_t moe_max_tiles(int64_t assignments, int n_experts) {
  const int64_t nonempty = assignments < n_experts ? assignments : n_experts;
  return assignments / kMoeTileRows + nonempty;
}

// Rows per pass of moe_experts: its [assignments, hidden + d_model] f32 intermediates would take
// 0.8 GB for an 8k-row LLaDA-MoE canvas, so long batches go through in chunks whose
// intermediates fit this budget. A chunk re-reads the experts' weights, which costs little next
// to its thousands of rows of GEMM work.
constexpr size_t kMoeScratchBudget = 256 * kMiB;

inline int64_t moe_chunk_rows(int64_t rows, int top_k, int64_t d_model, int64_t hidden) {
  const size_t per_row = static_cast<size_t>(top_k) * static_cast<size_t>(hidden + d_model) * sizeof(float);
  const int64_t fit = static_cast<int64_t>(kMoeScratchBudget / (per_row > 0 ? per_row : 1));
  return rows < fit ? rows : (fit > 1 ? fit : 1);
}

// The scratch layout for one pass over `rows` rows (a chunk: moe_chunk_rows).
inline MoePlan moe_plan(int64_t rows, int top_k, int n_experts, int64_t d_model, int64_t hidden) {
  MoePlan p;
  p.assignments = rows * top_k;
  p.max_tiles = moe_max_tiles(p.assignments, n_experts);
  const size_t a = static_cast<size_t>(p.assignments), tiles = static_cast<size_t>(p.max_tiles);
  size_t at = 0;
  auto take = [&at](size_t bytes) {
    const size_t offset = at;
    at = round_up(offset + bytes, 256);
    return offset;
  };
  p.offsets = take((static_cast<size_t>(n_experts) + 1) * sizeof(int32_t));
  p.perm = take(a * sizeof(int32_t));
  p.tile_expert = take(tiles * sizeof(int32_t));
  p.tile_row = take(tiles * sizeof(int32_t));
  p.n_tiles = take(sizeof(int32_t));
  p.hidden = take(a * static_cast<size_t>(hidden) * sizeof(float));
  p.y = take(a * static_cast<size_t>(d_model) * sizeof(float));
  p.bytes = at;
  return p;
}

}  // namespace unmask::cuda_plan
