// The forward pass, written once against the Backend: ragged batch of canvases -> logits rows.
#pragma once

#include <cstdint>
#include <vector>

#include "io/config.h"
#include "io/weights.h"
#include "model/backend.h"

namespace unmask {

// One ragged batch: sequences concatenated without padding.
struct ForwardBatch {
  std::vector<int32_t> tokens;     // [n_tokens] every sequence's canvas, back to back
  std::vector<int32_t> positions;  // [n_tokens] position inside its own sequence
  std::vector<int32_t> seq_start;  // [n_seqs + 1] offsets into tokens
  std::vector<int32_t> out_rows;   // [n_out] indices into tokens whose logits are wanted

  // KV cache (--cache prefix|dual): a sequence contributes only the canvas positions being
  // recomputed; their K/V rows are written into the request's cache slot, and attention reads the
  // whole slot. Every sequence of a cached batch goes through add_cached_sequence.
  bool use_cache = false;
  std::vector<int32_t> cache_rows;  // [n_tokens] cache row of each token: slot base + position
  std::vector<int32_t> kv_begin;    // [n_seqs] first cache row attention reads
  std::vector<int32_t> kv_end;      // [n_seqs] one past the last
  // Block-causal attention in blocks of this many canvas positions (LLaDA2: the generation's
  // block length; required > 0 on block-causal models); 0: bidirectional.
  int32_t block_size = 0;

  void clear();
  // Appends one sequence, the first `length` positions of `canvas` (-1: all); returns the index
  // of its first token.
  int32_t add_sequence(const std::vector<int32_t>& canvas, int32_t length = -1);
  // Appends canvas positions [first, last) of a sequence whose cache slot starts at `slot_row`;
  // attention sees the slot's rows [slot_row, slot_row + kv_length) (-1: canvas.size()). Returns
  // the index of the token of position `first`.
  int32_t add_cached_sequence(const std::vector<int32_t>& canvas, int32_t first, int32_t last,
                              int32_t slot_row, int32_t kv_length = -1);
  int32_t n_tokens() const { return static_cast<int32_t>(tokens.size()); }
  int32_t n_seqs() const { return static_cast<int32_t>(seq_start.size()) - 1; }
};

class Model {
 public:
  // Uploads the weights once (CPU: keeps the mmap views). resident: the weights already live in
  // backend memory (synthetic models from Backend::random_weight) and are used as they are.
  Model(Backend& backend, const ModelConfig& config, const ModelWeights& host_weights,
        bool resident = false);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Sizes every activation buffer once; forward() grows them only if a batch exceeds this.
  void reserve(int32_t max_tokens, int32_t max_out_rows, int32_t max_seqs);
  // Sizes the KV cache: `rows` cached positions per layer (slots of all requests together).
  // Growing keeps the rows cached so far, at the same offsets.
  void reserve_cache(int32_t rows);
  int32_t cache_rows() const { return cache_rows_cap_; }
  // Frees every activation buffer and the KV cache (the next forward sizes them afresh): a
  // smaller workload after a larger one then holds only its own memory.
  void release_buffers();

  // Logits [n_out, vocab_size] in backend memory, valid until the next forward().
  Tensor forward(const ForwardBatch& batch);

  const ModelConfig& config() const { return config_; }
  Backend& backend() { return backend_; }
  // FLOPs of one forward (2 per multiply-add): matmuls, attention and the output head.
  double forward_flops(const ForwardBatch& batch) const;
  size_t weight_bytes() const { return weight_bytes_; }

 private:
  void release();

  Backend& backend_;
  ModelConfig config_;
  ModelWeights weights_;  // backend-resident views
  size_t weight_bytes_ = 0;

  int32_t cap_tokens_ = 0, cap_out_ = 0, cap_seqs_ = 0;
  uint64_t buffers_generation_ = 0;  // bumped whenever a buffer moves: part of the step key
  // Activations, F32:
  Tensor x_;        // [tokens, d_model] residual stream
  Tensor normed_;   // [tokens, d_model]
  Tensor q_;        // [tokens, n_heads*head_dim]
  Tensor k_, v_;    // [tokens, n_kv_heads*head_dim]
  Tensor attn_;     // [tokens, n_heads*head_dim]
  Tensor proj_;     // [tokens, d_model] attention / MLP output before the residual add
  Tensor gate_, up_;// [tokens, max(mlp_hidden, shared expert width)]
  // Mixture of experts:
  Tensor router_logits_;  // [tokens, n_experts]
  Tensor moe_out_;        // [tokens, d_model] routed experts' sum
  int32_t* d_expert_ids_ = nullptr;    // [tokens, top_k]
  float* d_expert_weights_ = nullptr;  // [tokens, top_k]
  std::vector<float*> expert_bias_;    // [n_layers] F32 expert bias in backend memory, or null
  Tensor picked_;   // [out, d_model] hidden states of the requested rows
  Tensor logits_;   // [out, vocab_size]
  // Index arrays in backend memory:
  int32_t* d_tokens_ = nullptr;     // [tokens]
  int32_t* d_positions_ = nullptr;  // [tokens]
  int32_t* d_seq_start_ = nullptr;  // [seqs + 1]
  int32_t* d_out_rows_ = nullptr;   // [out]
  int32_t* d_cache_rows_ = nullptr; // [tokens]
  int32_t* d_kv_begin_ = nullptr;   // [seqs]
  int32_t* d_kv_end_ = nullptr;     // [seqs]
  // KV cache, per layer, RoPE already applied to K:
  int32_t cache_rows_cap_ = 0;
  std::vector<Tensor> cache_k_, cache_v_;  // [n_layers] x [cache rows, n_kv_heads*head_dim]
};

}  // namespace unmask
