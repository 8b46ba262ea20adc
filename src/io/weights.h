// Model weights: views into the mapped safetensors, bound by name and checked against the config.
#pragma once

#include <string>
#include <vector>

#include "io/config.h"
#include "io/safetensors.h"
#include "io/tensor.h"

namespace unmask {

// The routed experts of one MoE layer: SwiGLU MLPs, E(x) = down(silu(gate x) * up x).
struct ExpertWeights {
  std::vector<Tensor> gate, up;  // [n_experts] x [expert_hidden, d_model]
  std::vector<Tensor> down;      // [n_experts] x [d_model, expert_hidden]
};

// A stored 2-D tensor [out, in] is Tensor{rows = out, cols = in}; a 1-D [n] is rows = 1, cols = n.
struct LayerWeights {
  Tensor attn_norm;   // [1, d_model]
  Tensor wq;          // [n_heads*head_dim, d_model]
  Tensor wk, wv;      // [n_kv_heads*head_dim, d_model]
  Tensor bq, bk, bv;  // [1, out]; data == nullptr unless include_qkv_bias
  Tensor wo;          // [d_model, n_heads*head_dim]
  Tensor ffn_norm;    // [1, d_model]
  Tensor w_gate;      // [mlp_hidden, d_model]   silu applied to its output
  Tensor w_up;        // [mlp_hidden, d_model]
  Tensor w_down;      // [d_model, mlp_hidden]; dense MLP (absent on MoE layers)
  // LLaDA2 / LLaDA-MoE:
  Tensor q_norm, k_norm;  // [1, head_dim] per-head RMSNorm of q and k before RoPE (qk_norm)
  // MoE layers (ModelConfig::moe_layer): router [n_experts, d_model], expert bias [1, n_experts]
  // (absent when the model has none), the routed experts, and the shared expert (its gate/up/down
  // in w_gate/w_up/w_down above, of width shared_expert_hidden; absent when it is 0).
  Tensor router, expert_bias;
  ExpertWeights experts;
};

struct ModelWeights {
  Tensor embedding;  // [embedding_size, d_model]
  std::vector<LayerWeights> layers;
  Tensor final_norm;  // [1, d_model]
  Tensor head;        // [embedding_size, d_model]; the embedding itself when weight_tying
};

// Binds every tensor the family needs, checking presence and exact shape; errors name the tensor,
// the expected and the found shape. Each Tensor keeps its stored dtype and points into `store`
// (never written through), so `store` must outlive the result.
// `notes`, when given, receives a line when a stored tensor is ignored (an output head stored
// beside weight_tying / tie_word_embeddings true: the embedding is the head, as in transformers).
ModelWeights bind_weights(const TensorStore& store, const ModelConfig& cfg,
                          std::vector<std::string>* notes = nullptr);

}  // namespace unmask
