// The forward pass, written once against the Backend: ragged batch of canvases -> logits rows.
#pragma once

#include <cstdint>
#include <vector>

#include "backend.h"
#include "config.h"
#include "weights.h"

namespace unmask {

// One ragged batch: sequences concatenated without padding.
struct ForwardBatch {
  std::vector<int32_t> tokens;     // [n_tokens] every sequence's canvas, back to back
  std::vector<int32_t> positions;  // [n_tokens] position inside its own sequence
  std::vector<int32_t> seq_start;  // [n_seqs + 1] offsets into tokens
  std::vector<int32_t> out_rows;   // [n_out] indices into tokens whose logits are wanted

  void clear();
  // Appends one sequence; returns the index of its first token.
  int32_t add_sequence(const std::vector<int32_t>& canvas);
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
  // Activations, F32:
  Tensor x_;        // [tokens, d_model] residual stream
  Tensor normed_;   // [tokens, d_model]
  Tensor q_;        // [tokens, n_heads*head_dim]
  Tensor k_, v_;    // [tokens, n_kv_heads*head_dim]
  Tensor attn_;     // [tokens, n_heads*head_dim]
  Tensor proj_;     // [tokens, d_model] attention / MLP output before the residual add
  Tensor gate_, up_;// [tokens, mlp_hidden]
  Tensor picked_;   // [out, d_model] hidden states of the requested rows
  Tensor logits_;   // [out, vocab_size]
  // Index arrays in backend memory:
  int32_t* d_tokens_ = nullptr;     // [tokens]
  int32_t* d_positions_ = nullptr;  // [tokens]
  int32_t* d_seq_start_ = nullptr;  // [seqs + 1]
  int32_t* d_out_rows_ = nullptr;   // [out]
};

}  // namespace unmask
