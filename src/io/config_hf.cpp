// Hugging Face-style config.json (Qwen2 for Dream, LlamaForCausalLM for Llama-format dLLMs):
// the same transformer under other key names, plus the switches unmask must refuse.
#include "io/config_reader.h"

namespace unmask::config_detail {

namespace {

// Settings the forward pass does not implement: refuse rather than produce silent garbage.
void check_hf_switches(const Reader& r, const std::string& family) {
  if (const json* act = r.get("hidden_act"); act && *act != "silu")
    r.bad("hidden_act", "is unsupported unless \"silu\"", *act);
  if (r.boolean("use_sliding_window", false))
    r.fail_key("use_sliding_window", "= true is unsupported (attention is over the whole canvas)");
  if (r.boolean("mlp_bias", false)) r.fail_key("mlp_bias", "= true is unsupported");
  // Llama's attention_bias also puts a bias on o_proj, which the forward pass lacks.
  if (family == "llama" && r.boolean("attention_bias", false))
    r.fail_key("attention_bias", "= true is unsupported for llama-format models");
}

}  // namespace

// Absent keys take the family's configuration-class defaults: DreamConfig (Dream's
// configuration_dream.py) and transformers' LlamaConfig. Sizes stay required.
void read_hf_sizes(const Reader& r, ModelConfig& c) {
  check_hf_switches(r, c.family);
  const bool dream = c.family == "dream";
  c.d_model = r.required_int("hidden_size");
  c.n_heads = r.required_int("num_attention_heads");
  c.n_layers = r.required_int("num_hidden_layers");
  c.mlp_hidden = r.required_int("intermediate_size");
  // note: DreamConfig's default is 32 KV heads when the key is absent; null means "as many as the
  // query heads" in both classes, and so does absence in LlamaConfig.
  if (dream && !r.has("num_key_value_heads")) {
    c.n_kv_heads = r.class_int("num_key_value_heads", 32);
  } else {
    c.n_kv_heads = r.optional_int("num_key_value_heads", c.n_heads);
  }
  // One vocab_size: the embedding rows; Dream pads them past the tokenizer's pieces.
  c.vocab_size = r.required_int("vocab_size");
  c.embedding_size = c.vocab_size;
  c.max_seq_len = r.class_int("max_position_embeddings", dream ? 32768 : 2048);
  c.rope_theta = read_rope_theta(r, 10000.0);
  c.rms_eps = r.class_number("rms_norm_eps", 1e-6, 1.0);
  c.weight_tying = r.class_boolean("tie_word_embeddings", false);
  c.include_qkv_bias = dream;  // Qwen2 attention always has q/k/v biases
  c.shifted_logits = true;     // both are adapted from autoregressive models
  c.infill_prompt_masks = dream;
  if (dream && !r.has("mask_token_id")) {
    c.mask_token_id = 151666;  // DreamConfig's default
    r.assume("mask_token_id", "151666");
  }
  if (const json* hd = r.get("head_dim")) {
    const int64_t head_dim = r.integer("head_dim", *hd, 1);
    if (head_dim * c.n_heads != c.d_model)
      r.bad("head_dim", "must equal hidden_size / num_attention_heads (" +
                            std::to_string(c.d_model / c.n_heads) + ")", *hd);
  }
}

}  // namespace unmask::config_detail
