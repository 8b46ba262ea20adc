// Hugging Face-style config.json (Qwen2 for Dream, LlamaForCausalLM for Llama-format dLLMs):
// the same transformer under other key names, plus the switches unmask must refuse.
#include "io/config_reader.h"

namespace unmask::config_detail {

namespace {

// Settings the forward pass does not implement: refuse rather than produce silent garbage.
void check_hf_switches(const Reader& r, const std::string& family) {
  if (const json* act = r.get("hidden_act"); act && *act != "silu")
    r.bad("hidden_act", "is unsupported unless \"silu\"", *act);
  if (const json* scaling = r.get("rope_scaling"))
    r.bad("rope_scaling", "is unsupported (only plain RoPE; remove it or set null)", *scaling);
  if (r.boolean("use_sliding_window", false))
    r.fail_key("use_sliding_window", "= true is unsupported (attention is over the whole canvas)");
  if (r.boolean("mlp_bias", false)) r.fail_key("mlp_bias", "= true is unsupported");
  // Llama's attention_bias also puts a bias on o_proj, which the forward pass lacks.
  if (family == "llama" && r.boolean("attention_bias", false))
    r.fail_key("attention_bias", "= true is unsupported for llama-format models");
}

}  // namespace

void read_hf_sizes(const Reader& r, ModelConfig& c) {
  check_hf_switches(r, c.family);
  c.d_model = r.required_int("hidden_size");
  c.n_heads = r.required_int("num_attention_heads");
  c.n_layers = r.required_int("num_hidden_layers");
  c.mlp_hidden = r.required_int("intermediate_size");
  c.n_kv_heads = r.optional_int("num_key_value_heads", c.n_heads);
  // One vocab_size: the embedding rows; Dream pads them past the tokenizer's pieces.
  c.vocab_size = r.required_int("vocab_size");
  c.embedding_size = c.vocab_size;
  c.max_seq_len = r.optional_int("max_position_embeddings", 4096);
  const bool dream = c.family == "dream";
  c.rope_theta = r.positive_number("rope_theta", dream ? 1e6 : 10000.0);
  c.rms_eps = r.positive_number("rms_norm_eps", dream ? 1e-6 : 1e-5);
  c.weight_tying = r.boolean("tie_word_embeddings", false);
  c.include_qkv_bias = dream;  // Qwen2 attention always has q/k/v biases
  c.shifted_logits = true;     // both are adapted from autoregressive models
  if (const json* hd = r.get("head_dim")) {
    const int64_t head_dim = r.integer("head_dim", *hd, 1);
    if (head_dim * c.n_heads != c.d_model)
      r.bad("head_dim", "must equal hidden_size / num_attention_heads (" +
                            std::to_string(c.d_model / c.n_heads) + ")", *hd);
  }
}

}  // namespace unmask::config_detail
