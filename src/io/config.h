// Model configuration: config.json read once into a typed, validated struct.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace unmask {

// Optional object "unmask_defaults" in config.json: generation settings that suit the model.
struct GenerationDefaults {
  int gen_length = 0, steps = 0, block_length = 0;  // 0 = not given
};

// Mixture of experts (LLaDA2, LLaDA-MoE). n_experts 0: every MLP is dense.
struct MoeConfig {
  int64_t n_experts = 0, top_k = 0;
  int64_t expert_hidden = 0;  // moe_intermediate_size: width of each routed expert
  int64_t shared_hidden = 0;  // width of the shared expert on MoE layers; 0: none
  int64_t n_group = 1, topk_group = 1;  // group-limited selection (1, 1: none)
  bool sigmoid_scores = false;   // LLaDA2: sigmoid(logits); LLaDA-MoE: softmax over the experts
  bool has_expert_bias = false;  // the layers store an expert bias
  bool bias_in_weights = false;  // the biased scores also weight the experts (LLaDA-MoE)
  bool renormalize = false;      // chosen weights renormalised to sum 1 (LLaDA2, top_k > 1)
  double routed_scale = 1.0;     // routed_scaling_factor (LLaDA2)
  std::vector<bool> layer_is_moe;  // [n_layers]: the layer's MLP is the MoE
};

struct ModelConfig {
  std::string path;    // config.json path, for messages
  std::string family;  // "llada", "dream", "llama", "llada2" (LLaDA2.x) or "llada_moe" (LLaDA-MoE)
  int64_t d_model = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, n_layers = 0;
  int64_t mlp_hidden = 0;       // SwiGLU hidden size of the dense MLP layers
  int64_t vocab_size = 0;       // tokens the tokenizer can produce
  int64_t embedding_size = 0;   // rows of the embedding and the head (>= vocab_size, padded)
  int64_t max_seq_len = 0;
  int32_t mask_token_id = -1;  // -1 until known (llama-format configs carry none)
  int32_t eos_token_id = -1;   // fills the tail of an answer that stopped early
  std::vector<int32_t> stop_token_ids;  // eos, eot, the tokenizer's end pieces: text ends at the first
  bool shifted_logits = false;  // the hidden state at i-1 predicts position i (Dream, llama)
  // Mask tokens written in the prompt are filled (LLaDA, Dream: their loops find masks by id).
  // false for llama-format dLLMs, whose mask is an ordinary token that prompts use as text.
  bool infill_prompt_masks = true;
  double rope_theta = 10000.0, rms_eps = 1e-5;
  int64_t rotary_dim = 0;     // RoPE turns the first rotary_dim dims of each head (head_dim: all)
  bool qk_norm = false;       // per-head RMSNorm of q and k before RoPE (LLaDA2, LLaDA-MoE)
  // Block diffusion (LLaDA2): attention is block-causal in the generation's block length, and
  // LLaDA2's loop runs.
  bool block_causal = false;
  MoeConfig moe;
  bool weight_tying = false, include_bias = false, include_qkv_bias = false;
  GenerationDefaults defaults;
  int64_t train_seq_len = 0;  // "unmask_train_seq_len": the sequence length it was trained on; 0: unknown
  // "key value" for each absent key given its configuration-class default (said on stderr).
  std::vector<std::string> assumed;
};

// Reads and validates a config.json; every error names the file and the key.
ModelConfig load_config(const std::string& path);
// Validates an already parsed config; `path` is only used in messages.
ModelConfig parse_config(const nlohmann::json& j, const std::string& path);
// Adds an end-of-text id unless already present.
void add_stop_id(ModelConfig& config, int32_t id);

}  // namespace unmask
