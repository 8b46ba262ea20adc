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

struct ModelConfig {
  std::string path;    // config.json path, for messages
  std::string family;  // "llada", "dream" or "llama"
  int64_t d_model = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, n_layers = 0;
  int64_t mlp_hidden = 0;       // SwiGLU hidden size
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
