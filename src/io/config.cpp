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
  };
  const std::string supported = "supported: llada, Dream, llama";
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
         "DreamModel, LlamaForCausalLM)");
}

// LLaDA configs carry the OLMo switches; the forward pass implements one setting of each, so any
// other setting must stop the load rather than produce silent garbage.
void check_llada_switches(const Reader& r) {
  struct Switch {
    const char* key;
    json expected;
  };
  const Switch switches[] = {
      {"rope", true},
      {"alibi", false},
      {"block_type", "llama"},
      {"layer_norm_type", "rms"},
      {"activation_type", "silu"},
      {"attention_layer_norm", false},
      {"input_emb_norm", false},
      {"scale_logits", false},
      {"multi_query_attention", false},
  };
  for (const Switch& s : switches) {
    const json* v = r.get(s.key);
    if (v != nullptr && *v != s.expected) {
      r.bad(s.key, "is unsupported unless " + s.expected.dump(), *v);
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


// LLaDA's own key names (OLMo heritage).
void read_llada_sizes(const Reader& r, ModelConfig& c) {
  check_llada_switches(r);
  c.d_model = r.required_int("d_model");
  c.n_heads = r.required_int("n_heads");
  c.n_layers = r.required_int("n_layers");
  c.mlp_hidden = r.required_int("mlp_hidden_size");
  c.vocab_size = r.required_int("vocab_size");
  c.n_kv_heads = r.optional_int("n_kv_heads", c.n_heads);
  c.embedding_size = r.optional_int("embedding_size", c.vocab_size);
  c.max_seq_len = r.optional_int("max_sequence_length", 4096);
  c.rope_theta = r.positive_number("rope_theta", 10000.0);
  c.rms_eps = r.positive_number("rms_norm_eps", 1e-5);
  c.weight_tying = r.boolean("weight_tying", false);
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
  Reader r(j, path);
  ModelConfig c;
  c.path = path;
  c.family = detect_family(r);
  const bool hf_names = c.family != "llada";
  if (hf_names) {
    config_detail::read_hf_sizes(r, c);
  } else {
    read_llada_sizes(r, c);
  }
  const char* heads_key = hf_names ? "num_attention_heads" : "n_heads";
  const char* kv_key = hf_names ? "num_key_value_heads" : "n_kv_heads";
  const char* width_key = hf_names ? "hidden_size" : "d_model";

  if (c.d_model % c.n_heads != 0) {
    r.fail_key(heads_key, "(" + std::to_string(c.n_heads) + ") must divide " + width_key + " (" +
                              std::to_string(c.d_model) + ")");
  }
  c.head_dim = c.d_model / c.n_heads;
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
  } else if (c.family != "llama") {
    r.required("mask_token_id");
  }
  // Hugging Face configs may list several end ids; the first one fills the tail of a finished answer.
  const json& eos = r.required("eos_token_id");
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
  return c;
}

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
