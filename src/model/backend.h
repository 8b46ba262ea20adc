// The Backend: the dozen layer-sized ops the forward pass is written against, plus memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "io/tensor.h"
#include "io/weights.h"  // ExpertWeights

namespace unmask {

// What the sampler wants from one logits row. Lives on the host; backends copy it as needed.
struct PickParams {
  uint64_t seed = 0;
  uint32_t step = 0;        // the request's sampling-step counter (noise key)
  uint32_t position = 0;    // absolute canvas position (noise key)
  float temperature = 0.f;  // 0: plain argmax
  int32_t top_k = 0;        // 0: off
  float top_p = 1.f;        // >= 1: off
  float cfg_scale = 0.f;    // > 0: combine with row `uncond_row` of the unconditional logits
  int32_t uncond_row = -1;
  int32_t n_banned = -1;    // bans the first n entries of pick's banned list; -1: all of them
  // ... except the first `first_banned` of those: 1 leaves the mask (entry 0) choosable, as
  // LLaDA2's loop does (its argmax runs over the whole vocabulary).
  int32_t first_banned = 0;
  // Dream's sample_tokens: logits / temperature, then top-p, then top-k, and prob, margin and
  // entropy taken from those filtered, tempered probabilities. Off: LLaDA's order (top-k, then
  // top-p) with the statistics of the unfiltered softmax(logits).
  bool filtered_confidence = false;
};

// The O(1) numbers per row that cross back to the host.
struct PickResult {
  int32_t token = -1;   // argmax of filtered logits + temperature * Gumbel noise
  float prob = 0.f;     // softmax(logits)[token] under the unfiltered, unperturbed logits
  float margin = 0.f;   // p(top1) - p(top2)
  float entropy = 0.f;  // -sum p log p; with filtered_confidence: -sum p log(p + 1e-10) (Dream)
  // false: the row (after the CFG combine, before bans) held a NaN or an infinity, so nothing was
  // chosen (token -1): the weights hold NaN/Inf or the activations overflowed.
  bool finite = true;
};

// Ragged batch layout for attention: sequence s owns query rows [q_start[s], q_start[s+1]) and
// key/value rows [kv_start[s], kv_end[s]) (kv_end null: [kv_start[s], kv_start[s+1]), rows back to
// back). A KV cache gives every request a fixed slot, so its rows need not be contiguous with the
// next sequence's. Arrays live in backend memory.
struct AttentionLayout {
  const int32_t* q_start = nullptr;   // [n_seqs + 1]
  const int32_t* kv_start = nullptr;  // [n_seqs + 1], or [n_seqs] with kv_end
  const int32_t* kv_end = nullptr;    // [n_seqs] or null
  int32_t n_seqs = 0;
  int32_t max_q_len = 0;   // longest sequence, for scratch sizing and launch shapes
  int32_t max_kv_len = 0;
  // Block-causal attention (LLaDA2's block diffusion) when block_size > 0: the query of canvas
  // position p sees the key at canvas position j iff floor(j / block_size) <= floor(p /
  // block_size), blocks aligned at position 0. A key's position is its row minus kv_start[s]; a
  // query's is q_positions[row] ([nq], backend memory; required when block_size > 0). Keys no
  // query of the sequence can see are never read (in a KV cache slot they may be unwritten).
  // block_size 0: bidirectional within each sequence.
  const int32_t* q_positions = nullptr;
  int32_t block_size = 0;
};

// Mixture-of-experts routing of one layer, as LLaDA2's and LLaDA-MoE's modeling code route.
enum class RouterScore { Sigmoid, Softmax };
struct MoeRouter {
  RouterScore score = RouterScore::Softmax;  // s = sigmoid(logits) (LLaDA2) or softmax (LLaDA-MoE)
  int n_experts = 0, top_k = 0;
  // Group-limited selection (LLaDA2): experts form n_group consecutive groups; a group scores the
  // sum of its two best biased scores, and only the topk_group best groups keep their experts.
  // n_group = topk_group = 1: no limit.
  int n_group = 1, topk_group = 1;
  // The expert bias is added to the scores for the selection; bias_in_weights: the biased scores
  // are also the mixing weights (LLaDA-MoE), else the unbiased ones are (LLaDA2).
  bool bias_in_weights = false;
  bool renormalize = false;  // weights /= (their sum + 1e-20) when top_k > 1 (LLaDA2)
  float scale = 1.f;         // weights *= scale (LLaDA2's routed_scaling_factor)
};


class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;    // "cpu" or "cuda"
  virtual std::string device() const = 0;  // human-readable device description
  // Lines for `info` and `bench` on how the backend computes ("blas: OpenBLAS 0.3.21, ...").
  virtual std::vector<std::string> details() const { return {}; }

  // --- memory. All op arguments point into memory obtained here (or weights from upload_weight).
  virtual void* alloc(size_t bytes) = 0;
  virtual void free(void* ptr) = 0;
  // CPU: returns the same view (weights stay memory-mapped); CUDA: a device copy, same dtype.
  virtual Tensor upload_weight(const Tensor& host) = 0;
  virtual void upload(void* dst, const void* src, size_t bytes) = 0;
  virtual void download(void* dst, const void* src, size_t bytes) = 0;
  // dst = src, both in backend memory (the memory-bandwidth baseline of `unmask bench`).
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual size_t peak_bytes() const = 0;  // high-water mark of alloc + uploaded weights
  // Starts a new high-water mark at the bytes live now (`unmask bench` gives each row its own).
  virtual void reset_peak() = 0;
  // Frees the scratch the backend grew on demand for its own ops (regrown when next needed), so
  // a smaller workload after a larger one does not keep the larger one's memory.
  virtual void release_scratch() {}
  // A [rows, cols] weight of `dtype` in backend memory, element i = synthetic_weight(seed, i,
  // scale) rounded to dtype (rng.h): synthetic models of a real shape, no file needed, identical
  // on every backend. Freed with the backend.
  virtual Tensor random_weight(int64_t rows, int64_t cols, DType dtype, uint64_t seed,
                               float scale) = 0;
  virtual void synchronize() {}

  // --- step recording. The ops between begin_step(key) and end_step(key) may be recorded and
  // later replayed as one launch (CUDA graphs); `key` must change whenever any op argument
  // would (shapes, buffers). replay_step(key): true when a recording was launched instead, and
  // the ops must not run. begin_step: true when recording, in which case nothing runs until
  // end_step, which launches the recording and returns true, or returns false when recording
  // failed, and the caller runs the ops again. abort_step ends a recording cut short by an
  // error. The CPU backend records nothing.
  virtual bool replay_step(uint64_t /*key*/) { return false; }
  virtual bool begin_step(uint64_t /*key*/) { return false; }
  virtual bool end_step(uint64_t /*key*/) { return true; }
  virtual void abort_step() {}
  virtual int64_t replayed_steps() const { return 0; }  // replays so far, for stats and tests

  // --- ops. Activations are F32 [rows, cols]; weights any DType.
  // out[i] = table[ids[i]]; ids: [n] with n = out.rows.
  virtual void embed(const int32_t* ids, const Tensor& table, Tensor& out) = 0;
  // out = x * rsqrt(mean(x^2) + eps) * w, per row, computed in fp32.
  virtual void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) = 0;
  // out = x · wᵀ (+ bias): x [n, in], w [out, in], bias [1, out] or null, out [n, out].
  virtual void matmul(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out) = 0;
  // In place on x [n, n_heads*head_dim], positions [n]: in each head, the first rotary_dim
  // dimensions rotate as rotate-half pairs (i, i + rotary_dim/2) at frequency
  // theta^(-2i/rotary_dim); dimensions [rotary_dim, head_dim) pass unchanged (partial RoPE,
  // LLaDA2's partial_rotary_factor). rotary_dim: even, in [2, head_dim].
  virtual void rope(Tensor& x, const int32_t* positions, int head_dim, int rotary_dim,
                    float theta) = 0;
  // Attention within each sequence, bidirectional or block-causal (layout.block_size); GQA when
  // n_kv_heads < n_heads.
  // q [nq, n_heads*head_dim], k/v [nk, n_kv_heads*head_dim], out [nq, n_heads*head_dim].
  virtual void attention(const Tensor& q, const Tensor& k, const Tensor& v,
                         const AttentionLayout& layout, int n_heads, int n_kv_heads,
                         int head_dim, Tensor& out) = 0;
  // out = silu(gate) * up, elementwise.
  virtual void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  // x += y, elementwise.
  virtual void add(Tensor& x, const Tensor& y) = 0;
  // Routes each row: router_logits [n, n_experts] F32 (x · W_gateᵀ, in fp32), expert_bias
  // [n_experts] F32 or null -> expert_ids [n, top_k] (int32, distinct per row, in selection
  // order: best first) and expert_weights [n, top_k] (F32), both backend memory. Ties go to the
  // lower index; a NaN score ranks last.
  virtual void moe_route(const Tensor& router_logits, const float* expert_bias, const MoeRouter& router,
                         int32_t* expert_ids, float* expert_weights) = 0;
  // out[i] = sum_t expert_weights[i, t] * E_{expert_ids[i, t]}(x[i]) with E_e the SwiGLU MLP of
  // expert e; x [n, d_model], out [n, d_model] (overwritten; must not alias x). Only the experts
  // some row chose run.
  virtual void moe_experts(const Tensor& x, const int32_t* expert_ids, const float* expert_weights,
                           int top_k, const ExpertWeights& experts, Tensor& out) = 0;
  // out[i] = x[rows[i]]; rows: [out.rows].
  virtual void gather_rows(const Tensor& x, const int32_t* rows, Tensor& out) = 0;
  // out[rows[i]] = x[i]; rows: [x.rows], distinct. Writes fresh K/V rows into a cache.
  virtual void scatter_rows(const Tensor& x, const int32_t* rows, Tensor& out) = 0;
  // Reduces each logits row (cols = vocabulary) to a PickResult. `params` and `out` are host
  // arrays of logits.rows entries; `uncond` holds the unconditional rows for classifier-free
  // guidance (null when unused). Banned tokens (the mask, EOS under --no-eos) are never chosen.
  virtual void pick(const Tensor& logits, const Tensor* uncond, const PickParams* params,
                    const std::vector<int32_t>& banned, PickResult* out) = 0;
};

// kind: "auto", "cpu" or "cuda". threads <= 0: the machine's default.
// "auto" picks CUDA when a device is usable and says so on stderr when it falls back.
std::unique_ptr<Backend> make_backend(const std::string& kind, int threads);
// threads <= 0: the machine's default (cpu_backend.h). widen_budget_bytes: how much f32 copy of
// non-f32 weights upload_weight may make (the rest is widened tile by tile in each matmul);
// SIZE_MAX: a default of min(2 GiB, RAM / 8).
std::unique_ptr<Backend> make_cpu_backend(int threads, size_t widen_budget_bytes = SIZE_MAX);
bool cuda_compiled_in();
// Whether an NVIDIA driver is installed: its user-space library libcuda.so.1 loads (or the
// kernel module reports a version). Nothing is initialised; `why` says what is missing.
bool nvidia_driver_present(std::string* why = nullptr);

}  // namespace unmask
