// The mixture-of-experts families' config.json: LLaDA2.x (model_type "llada2_moe") and
// LLaDA-MoE (architectures "LLaDAMoEModelLM"), as their published modeling code reads them
// (modeling_llada2_moe.py, modeling_lladamoe.py). Keys that the code ignores are ignored here too.
#include <cmath>

#include "io/config_reader.h"

namespace unmask::config_detail {

namespace {

// rotary dim = int(head_dim * partial_rotary_factor), as both modeling files compute it.
void read_rotary(const Reader& r, ModelConfig& c) {
  double factor = 1.0;
  if (const json* v = r.get("partial_rotary_factor")) {
    if (!v->is_number() || !(v->get<double>() > 0) || v->get<double>() > 1)
      r.bad("partial_rotary_factor", "must be a number in (0, 1]", *v);
    factor = v->get<double>();
  } else {
    r.assume("partial_rotary_factor", "1.0");
  }
  c.rotary_dim = static_cast<int64_t>(static_cast<double>(c.head_dim) * factor);
  if (c.rotary_dim < 2 || c.rotary_dim % 2 != 0)
    r.fail_key("partial_rotary_factor", "gives a rotary dimension of " + std::to_string(c.rotary_dim) +
                                            " (head_dim " + std::to_string(c.head_dim) +
                                            " x factor); RoPE needs it even and at least 2");
}

// The routed experts' count, choice and width (`width_key`: each family names it its own way).
void read_experts(const Reader& r, MoeConfig& m, const char* width_key) {
  m.n_experts = r.required_int("num_experts");
  m.top_k = r.required_int("num_experts_per_tok");
  if (m.top_k > m.n_experts)
    r.bad("num_experts_per_tok", "must not exceed num_experts (" + std::to_string(m.n_experts) + ")",
          *r.get("num_experts_per_tok"));
  m.expert_hidden = r.required_int(width_key);
}

// The transformer's sizes under the Hugging Face key names both families use.
void read_shape(const Reader& r, ModelConfig& c) {
  if (const json* act = r.get("hidden_act"); act && *act != "silu")
    r.bad("hidden_act", "is unsupported unless \"silu\"", *act);
  c.d_model = r.required_int("hidden_size");
  c.n_heads = r.required_int("num_attention_heads");
  c.n_kv_heads = r.optional_int("num_key_value_heads", c.n_heads);
  c.n_layers = r.required_int("num_hidden_layers");
  c.vocab_size = r.required_int("vocab_size");
  c.embedding_size = c.vocab_size;
}

void refuse_true(const Reader& r, const char* key, const char* why) {
  if (r.boolean(key, false)) r.fail_key(key, std::string("= true is unsupported (") + why + ")");
}

}  // namespace

// LLaDA2.x: configuration_llada2_moe.py's keys. use_bias, whose class default differs between
// the published copies, is required rather than assumed.
void read_llada2_sizes(const Reader& r, ModelConfig& c) {
  read_shape(r, c);
  c.head_dim = r.optional_int("head_dim", 0);
  if (c.head_dim == 0) {
    if (c.d_model % c.n_heads != 0)
      r.fail_key("num_attention_heads", "must divide hidden_size when head_dim is absent");
    c.head_dim = c.d_model / c.n_heads;
  }
  c.mlp_hidden = r.required_int("intermediate_size");
  c.max_seq_len = r.class_int("max_position_embeddings", 32768);
  c.rope_theta = read_rope_theta(r, 600000.0);
  c.rms_eps = r.class_number("rms_norm_eps", 1e-6, 1.0);
  c.weight_tying = r.class_boolean("tie_word_embeddings", false);
  // note: the published copies disagree on this default (dInfer's class: false); the Hugging
  // Face class and the modeling code the checkpoints ship with apply qk-norm.
  c.qk_norm = r.class_boolean("use_qk_norm", true);
  c.include_qkv_bias = r.boolean("use_qkv_bias", false);
  if (!r.has("use_bias"))
    r.fail_key("use_bias", "is missing: the published configuration classes disagree on its default, "
                           "so config.json must say");
  refuse_true(r, "use_bias", "a bias on the attention output and the MLPs");
  read_rotary(r, c);
  c.block_causal = true;

  MoeConfig& m = c.moe;
  read_experts(r, m, "moe_intermediate_size");
  m.n_group = r.required_int("n_group");
  m.topk_group = r.required_int("topk_group");
  if (m.n_experts % m.n_group != 0 || m.n_experts / m.n_group < 2)
    r.bad("n_group", "must divide num_experts into groups of at least 2 (the group score sums the "
                     "top two)", *r.get("n_group"));
  if (m.topk_group > m.n_group) r.bad("topk_group", "must not exceed n_group", *r.get("topk_group"));
  if (m.topk_group * (m.n_experts / m.n_group) < m.top_k)
    r.bad("topk_group", "keeps fewer experts than num_experts_per_tok", *r.get("topk_group"));
  // note: absent, null or 0 shared experts all mean none (a zero-width MLP in the code).
  m.shared_hidden = m.expert_hidden * r.optional_int("num_shared_experts", 0, 0);
  m.routed_scale = r.positive_number("routed_scaling_factor", 1.0);
  if (!r.get("routed_scaling_factor")) r.assume("routed_scaling_factor", "1.0");
  m.sigmoid_scores = true;   // score_function is not read by the code
  m.has_expert_bias = true;  // the buffer always exists (moe_router_enable_expert_bias is not read)
  m.bias_in_weights = false;
  m.renormalize = m.top_k > 1;  // norm_topk_prob is not read
  const int64_t dense = r.required_int("first_k_dense_replace", 0);
  for (int64_t i = 0; i < c.n_layers; i++) m.layer_is_moe.push_back(i >= dense);
}

// LLaDA-MoE: configuration_lladamoe.py's keys (OLMoE-style).
void read_llada_moe_sizes(const Reader& r, ModelConfig& c) {
  read_shape(r, c);
  if (c.d_model % c.n_heads != 0) r.fail_key("num_attention_heads", "must divide hidden_size");
  c.head_dim = c.d_model / c.n_heads;  // the modeling code has no head_dim key
  c.max_seq_len = r.class_int("max_position_embeddings", 4096);
  c.rope_theta = read_rope_theta(r, 10000.0);
  c.rms_eps = r.class_number("rms_norm_eps", 1e-5, 1.0);
  c.weight_tying = r.class_boolean("tie_word_embeddings", false);
  refuse_true(r, "attention_bias", "a bias on o_proj, which the forward pass lacks");
  refuse_true(r, "clip_qkv", "clipped q/k/v");
  c.qk_norm = r.class_boolean("qk_layernorm", true);
  read_rotary(r, c);

  MoeConfig& m = c.moe;
  read_experts(r, m, "expert_intermediate_size");
  c.mlp_hidden = r.optional_int("dense_intermediate_size", 0);
  if (const json* shared = r.get("shared_expert_intermediate_size"))
    m.shared_hidden = r.integer("shared_expert_intermediate_size", *shared, 0);
  m.sigmoid_scores = false;
  m.has_expert_bias = r.class_boolean("moe_router_enable_expert_bias", false);
  m.bias_in_weights = true;
  m.renormalize = false;  // norm_topk_prob is hard-coded False in the block
  // moe_layer_freq: a list with one entry per layer (0: dense MLP), or 1 for every layer.
  const json* freq = r.get("moe_layer_freq");
  if (freq == nullptr || (freq->is_number_integer() && freq->get<int64_t>() == 1)) {
    if (!freq) r.assume("moe_layer_freq", "1");
    m.layer_is_moe.assign(static_cast<size_t>(c.n_layers), true);
  } else if (freq->is_array() && static_cast<int64_t>(freq->size()) == c.n_layers) {
    for (const json& f : *freq) {
      if (!f.is_number_integer() || f.get<int64_t>() < 0)
        r.bad("moe_layer_freq", "must hold non-negative integers", f);
      m.layer_is_moe.push_back(f.get<int64_t>() != 0);
    }
  } else {
    r.bad("moe_layer_freq", "must be 1 or a list of num_hidden_layers (" + std::to_string(c.n_layers) +
                                ") entries, 0 for a dense layer", *freq);
  }
  for (bool moe : m.layer_is_moe)
    if (!moe && c.mlp_hidden == 0)
      r.fail_key("dense_intermediate_size", "is missing, but moe_layer_freq asks for dense layers");
}

}  // namespace unmask::config_detail
