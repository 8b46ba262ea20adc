// config.json → ModelConfig: typed, range-checked and cross-checked once, naming the key at fault.
#include "io/config.h"

#include <algorithm>

#include "io/config_reader.h"

namespace unmask {

using config_detail::json;
using config_detail::Reader;
using config_detail::describe;

namespace {

// model_type (or architectures) -> family. Hugging Face spells Dream's model_type "Dream".
std::string detect_family(const Reader& r) {
  struct Known {
    const char* model_type;
    const char* architecture;
    const char* family;
  };
  static const Known known[] = {
      {"llada", "LLaDAModelLM", "llada"},
      {"Dream", "DreamModel", "dream"},
      {"llama", "LlamaForCausalLM", "llama"},
      {"llada2_moe", "LLaDA2MoeModelLM", "llada2"},
      {"lladamoe", "LLaDAMoEModelLM", "llada_moe"},
  };
  const std::string supported = "supported: llada, Dream, llama, llada2_moe, lladamoe";
  // LLaDA-MoE's published config says model_type "llada": its architecture tells it apart.
  if (const json* archs = r.get("architectures"); archs && archs->is_array()) {
    for (const json& a : *archs)
      if (a == "LLaDAMoEModelLM") return "llada_moe";
  }
  if (const json* type = r.get("model_type")) {
    if (!type->is_string()) r.bad("model_type", "must be a string", *type);
    const std::string& name = type->get_ref<const std::string&>();
    for (const Known& k : known)
      if (name == k.model_type || name == k.family) return k.family;
    r.fail("unsupported model_type '" + printable(name) + "' (" + supported + ")");
  }
  if (const json* archs = r.get("architectures")) {
    if (archs->is_array()) {
      for (const json& a : *archs)
        for (const Known& k : known)
          if (a.is_string() && a.get_ref<const std::string&>() == k.architecture) return k.family;
    }
  }
  r.fail("no 'model_type', and 'architectures' lists no supported architecture (LLaDAModelLM, "
         "DreamModel, LlamaForCausalLM, LLaDA2MoeModelLM, LLaDAMoEModelLM)");
}

// LLaDA configs carry the OLMo switches; the forward pass implements one setting of each, so any
// other setting must stop the load rather than produce silent garbage. An absent switch means
// its configuration-class default (configuration_llada.py), which for four of them is a model
// unmask does not run.
void check_llada_switches(const Reader& r) {
  struct Switch {
    const char* key;
    json expected;
    json class_default;
  };
  const Switch switches[] = {
      {"rope", true, false},
      {"alibi", false, false},
      {"block_type", "llama", "sequential"},
      {"layer_norm_type", "rms", "default"},
      {"activation_type", "silu", "swiglu"},
      {"attention_layer_norm", false, false},
      {"input_emb_norm", false, false},
      {"scale_logits", false, false},
      {"multi_query_attention", false, nullptr},
  };
  for (const Switch& s : switches) {
    const json* v = r.get(s.key);
    if (v != nullptr && *v != s.expected) {
      r.bad(s.key, "is unsupported unless " + s.expected.dump(), *v);
    }
    if (v == nullptr && !r.has(s.key) && !s.class_default.is_null() && s.class_default != s.expected) {
      r.fail_key(s.key, "is missing, which LLaDA's configuration class reads as " + s.class_default.dump() +
                            "; unmask runs only " + s.expected.dump() + " (LLaDA checkpoints write \"" +
                            s.key + "\": " + s.expected.dump() + ")");
    }
  }
}

GenerationDefaults read_defaults(const json& v, const std::string& path) {
  GenerationDefaults d;
  if (!v.is_object()) {
    fail_input(path + ": key 'unmask_defaults' must be an object {gen_length, steps, "
                      "block_length} (got " + describe(v) + ")");
  }
  for (const auto& [key, value] : v.items()) {
    if (key != "gen_length" && key != "steps" && key != "block_length") {
      fail_input(path + ": key 'unmask_defaults." + printable(key) +
                 "' is unknown (known: gen_length, steps, block_length)");
    }
  }
  Reader r(v, path, "unmask_defaults.");
  d.gen_length = static_cast<int>(r.optional_int("gen_length", 0));
  d.steps = static_cast<int>(r.optional_int("steps", 0));
  d.block_length = static_cast<int>(r.optional_int("block_length", 0));
  return d;
}


// LLaDA's own key names (OLMo heritage). Absent keys take configuration_llada.py's defaults.
void read_llada_sizes(const Reader& r, ModelConfig& c) {
  check_llada_switches(r);
  c.d_model = r.required_int("d_model");
  c.n_heads = r.required_int("n_heads");
  c.n_layers = r.required_int("n_layers");
  c.vocab_size = r.required_int("vocab_size");
  c.n_kv_heads = r.optional_int("n_kv_heads", c.n_heads);  // null or absent: n_heads
  if (r.get("mlp_hidden_size")) {
    c.mlp_hidden = r.required_int("mlp_hidden_size");
  } else {
    const int64_t ratio = r.optional_int("mlp_ratio", 4);
    c.mlp_hidden = ratio * c.d_model;
    if (c.mlp_hidden > config_detail::kMaxInt) r.fail_key("mlp_ratio", "times d_model exceeds 2^31");
    r.assume("mlp_hidden_size", std::to_string(c.mlp_hidden) + " (mlp_ratio " + std::to_string(ratio) +
                                    " x d_model)");
  }
  // note: absent means the class default 50304; an explicit null means vocab_size.
  c.embedding_size = r.has("embedding_size") ? r.optional_int("embedding_size", c.vocab_size)
                                             : r.class_int("embedding_size", 50304);
  c.max_seq_len = r.class_int("max_sequence_length", 1024);
  c.rope_theta = read_rope_theta(r, 10000.0);
  c.rms_eps = r.class_number("rms_norm_eps", 1e-5, 1.0);
  c.weight_tying = r.class_boolean("weight_tying", true);
  c.include_bias = r.boolean("include_bias", false);
  c.include_qkv_bias = r.boolean("include_qkv_bias", false);
  if (c.include_bias) {
    r.fail_key("include_bias", "= true is unsupported (biases on every linear layer); only "
                               "include_qkv_bias is");
  }
}

}  // namespace

ModelConfig parse_config(const json& j, const std::string& path) {
  if (!j.is_object()) fail_input(path + ": not a JSON object");
  ModelConfig c;
  Reader r(j, path, "", &c.assumed);
  c.path = path;
  c.family = detect_family(r);
  const bool hf_names = c.family != "llada";
  if (c.family == "llada2") {
    config_detail::read_llada2_sizes(r, c);
  } else if (c.family == "llada_moe") {
    config_detail::read_llada_moe_sizes(r, c);
  } else if (hf_names) {
    config_detail::read_hf_sizes(r, c);
  } else {
    read_llada_sizes(r, c);
  }
  const char* heads_key = hf_names ? "num_attention_heads" : "n_heads";
  const char* kv_key = hf_names ? "num_key_value_heads" : "n_kv_heads";
  const char* width_key = hf_names ? "hidden_size" : "d_model";

  if (c.head_dim == 0) {  // the MoE families read theirs
    if (c.d_model % c.n_heads != 0) {
      r.fail_key(heads_key, "(" + std::to_string(c.n_heads) + ") must divide " + width_key + " (" +
                                std::to_string(c.d_model) + ")");
    }
    c.head_dim = c.d_model / c.n_heads;
  }
  if (c.rotary_dim == 0) c.rotary_dim = c.head_dim;
  if (c.head_dim % 2 != 0) {
    r.fail_key(heads_key, "gives an odd head_dim " + std::string(width_key) + "/" + heads_key +
                              " = " + std::to_string(c.head_dim) + "; RoPE needs it even");
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    r.fail_key(kv_key, "(" + std::to_string(c.n_kv_heads) + ") must divide " + heads_key + " (" +
                           std::to_string(c.n_heads) + ")");
  }
  if (c.vocab_size > c.embedding_size) {
    r.fail_key("vocab_size", "(" + std::to_string(c.vocab_size) +
                                 ") must not exceed embedding_size (" +
                                 std::to_string(c.embedding_size) + ")");
  }

  // Token ids index the embedding rows.
  auto token_id = [&](const std::string& key, const json& v) {
    int64_t id = r.integer(key, v, 0);
    if (id >= c.embedding_size) {
      r.bad(key, std::string("must be below ") + (hf_names ? "vocab_size" : "embedding_size") + " (" +
                     std::to_string(c.embedding_size) + ")", v);
    }
    return static_cast<int32_t>(id);
  };
  // Llama-format dLLMs (DiffuLLaMA) carry no mask id: it comes from --mask-id or the tokenizer.
  if (const json* mask = r.get("mask_token_id")) {
    c.mask_token_id = token_id("mask_token_id", *mask);
  } else if (c.family == "dream" && c.mask_token_id >= c.embedding_size) {
    r.fail_key("mask_token_id", "is absent, and DreamConfig's default " + std::to_string(c.mask_token_id) +
                                    " is not below vocab_size (" + std::to_string(c.embedding_size) + ")");
  } else if (c.family == "llada") {
    r.required("mask_token_id");
  } else if (c.family == "llada2" || c.family == "llada_moe") {
    // The published configs carry no mask id: LLaDA2's generate() takes 156895 by default.
    c.mask_token_id = token_id("mask_token_id", json(156895));
    r.assume("mask_token_id", "156895");
  }
  // Hugging Face configs may list several end ids; the first one fills the tail of a finished answer.
  const json default_eos = 156892;  // LLaDA2's generate() default
  const bool moe_family = c.family == "llada2" || c.family == "llada_moe";
  if (moe_family && !r.get("eos_token_id")) r.assume("eos_token_id", "156892");
  const json& eos = moe_family && !r.get("eos_token_id") ? default_eos : r.required("eos_token_id");
  if (eos.is_array() && !eos.empty()) {
    for (const json& id : eos) c.stop_token_ids.push_back(token_id("eos_token_id", id));
  } else {
    c.stop_token_ids.push_back(token_id("eos_token_id", eos));
  }
  c.eos_token_id = c.stop_token_ids.front();
  if (const json* eot = r.get("eot_token_id")) add_stop_id(c, token_id("eot_token_id", *eot));
  for (int32_t id : c.stop_token_ids) {
    if (id == c.mask_token_id) {
      r.fail_key("mask_token_id", "equals an end-of-text id, eos_token_id or eot_token_id (" +
                                      std::to_string(id) + ")");
    }
  }
  if (const json* d = r.get("unmask_defaults")) c.defaults = read_defaults(*d, path);
  c.train_seq_len = r.optional_int("unmask_train_seq_len", 0);
  return c;
}

namespace config_detail {

double read_rope_theta(const Reader& r, double class_default) {
  // Only plain RoPE: any other rope_type, in either layout, changes the frequencies.
  for (const std::string key : {"rope_parameters", "rope_scaling"}) {
    const json* p = r.get(key);
    if (!p) continue;
    if (!p->is_object()) r.bad(key, "is unsupported (only plain RoPE; remove it or set null)", *p);
    const char* type_name = p->contains("rope_type") ? "rope_type" : p->contains("type") ? "type" : nullptr;
    if (type_name) {
      const json& type = (*p)[type_name];
      if (!type.is_null() && type != "default")
        r.bad(key + "." + type_name, "is unsupported (only plain RoPE, rope_type \"default\")", type);
    } else if (key == "rope_scaling") {
      r.bad(key, "is unsupported (only plain RoPE; remove it or set null)", *p);
    }
    if (key == "rope_parameters") {
      for (const auto& [sub, value] : p->items())
        if (sub != "rope_type" && sub != "type" && sub != "rope_theta")
          r.bad(key + "." + sub, "is unsupported (only plain RoPE: rope_type and rope_theta)", value);
    }
  }
  const json* params = r.get("rope_parameters");
  if (params && params->contains("rope_theta") && !(*params)["rope_theta"].is_null()) {
    const Reader inner(*params, r.path(), "rope_parameters.");
    const double theta = inner.positive_number("rope_theta", 0);
    if (r.get("rope_theta")) {
      const double top = r.positive_number("rope_theta", 0);
      if (top != theta)
        r.bad("rope_theta", "contradicts rope_parameters.rope_theta (" + describe(json(theta)) + ")",
              *r.get("rope_theta"));
    }
    return theta;
  }
  return r.class_number("rope_theta", class_default);
}

}  // namespace config_detail

void add_stop_id(ModelConfig& config, int32_t id) {
  if (std::find(config.stop_token_ids.begin(), config.stop_token_ids.end(), id) ==
      config.stop_token_ids.end())
    config.stop_token_ids.push_back(id);
}

ModelConfig load_config(const std::string& path) {
  MappedFile file(path);
  const char* text = static_cast<const char*>(file.data());
  static const char kEmpty[] = "";
  if (text == nullptr) text = kEmpty;
  json j = json::parse(text, text + file.size(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail_input(path + ": not valid JSON");
  return parse_config(j, path);
}

}  // namespace unmask
