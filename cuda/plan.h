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
// V [kv_tile, hd], scores [q_tile, kv_tile], and running max / sum / rescale per query.
inline size_t attention_smem_bytes(int head_dim, int q_tile, int kv_tile) {
  const size_t floats = static_cast<size_t>(q_tile) * head_dim +
                        static_cast<size_t>(kv_tile) * (head_dim + 1) +
                        static_cast<size_t>(kv_tile) * head_dim +
                        static_cast<size_t>(q_tile) * kv_tile + 3 * static_cast<size_t>(q_tile);
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

}  // namespace unmask::cuda_plan
