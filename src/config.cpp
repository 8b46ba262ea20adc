// config.json → ModelConfig: typed, range-checked and cross-checked once, naming the key at fault.
#include "config.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "common.h"
#include "safetensors.h"  // printable()

namespace unmask {

using json = nlohmann::json;

namespace {

// note: sizes and ids are capped at int32 so every downstream product of two of them fits int64.
constexpr int64_t kMaxInt = std::numeric_limits<int32_t>::max();

std::string describe(const json& v) {
  if (v.is_string()) return "\"" + printable(v.get<std::string>(), 40) + "\"";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return printable(v.dump(), 40);
}

// Typed access to one JSON object; `prefix` names the enclosing object in messages.
class Reader {
 public:
  Reader(const json& obj, const std::string& path, const std::string& prefix = "")
      : obj_(obj), path_(path), prefix_(prefix) {}

  // The value, or nullptr when absent or null (HF configs write null for "use the default").
  const json* get(const std::string& key) const {
    auto it = obj_.find(key);
    return (it == obj_.end() || it->is_null()) ? nullptr : &*it;
  }

  [[noreturn]] void fail(const std::string& what) const { fail_input(path_ + ": " + what); }
  [[noreturn]] void fail_key(const std::string& key, const std::string& what) const {
    fail_input(path_ + ": key '" + prefix_ + key + "' " + what);
  }
  [[noreturn]] void bad(const std::string& key, const std::string& what, const json& v) const {
    fail_key(key, what + " (got " + describe(v) + ")");
  }

  const json& required(const std::string& key) const {
    const json* v = get(key);
    if (v == nullptr) fail_input(path_ + ": missing required key '" + prefix_ + key + "'");
    return *v;
  }

  // An integer in [lo, kMaxInt]; lo is 1 for sizes, 0 for token ids.
  int64_t integer(const std::string& key, const json& v, int64_t lo) const {
    const char* what = lo > 0 ? "must be a positive integer" : "must be a non-negative integer";
    if (!v.is_number_integer()) bad(key, what, v);
    if (v.is_number_unsigned() ? v.get<uint64_t>() > static_cast<uint64_t>(kMaxInt)
                               : v.get<int64_t>() > kMaxInt) {
      bad(key, "must be at most " + std::to_string(kMaxInt), v);
    }
    if (v.get<int64_t>() < lo) bad(key, what, v);
    return v.get<int64_t>();
  }
  int64_t required_int(const std::string& key, int64_t lo = 1) const {
    return integer(key, required(key), lo);
  }
  int64_t optional_int(const std::string& key, int64_t fallback, int64_t lo = 1) const {
    const json* v = get(key);
    return v ? integer(key, *v, lo) : fallback;
  }

  double positive_number(const std::string& key, double fallback) const {
    const json* v = get(key);
    if (v == nullptr) return fallback;
    if (!v->is_number() || !(v->get<double>() > 0) || !std::isfinite(v->get<double>())) {
      bad(key, "must be a positive number", *v);
    }
    return v->get<double>();
  }

  bool boolean(const std::string& key, bool fallback) const {
    const json* v = get(key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) bad(key, "must be true or false", *v);
    return v->get<bool>();
  }

 private:
  const json& obj_;
  const std::string& path_;
  std::string prefix_;
};

std::string detect_family(const Reader& r) {
  if (const json* type = r.get("model_type")) {
    if (!type->is_string()) r.bad("model_type", "must be a string", *type);
    const std::string& name = type->get_ref<const std::string&>();
    if (name != "llada") r.fail("unsupported model_type '" + printable(name) + "' (supported: llada)");
    return name;
  }
  if (const json* archs = r.get("architectures")) {
    if (archs->is_array()) {
      for (const json& a : *archs) {
        if (a.is_string() && a.get_ref<const std::string&>() == "LLaDAModelLM") return "llada";
      }
    }
  }
  r.fail("no 'model_type', and 'architectures' does not list LLaDAModelLM (supported: llada)");
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

}  // namespace

ModelConfig parse_config(const json& j, const std::string& path) {
  if (!j.is_object()) fail_input(path + ": not a JSON object");
  Reader r(j, path);
  ModelConfig c;
  c.path = path;
  c.family = detect_family(r);
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

  if (c.d_model % c.n_heads != 0) {
    r.fail_key("n_heads", "(" + std::to_string(c.n_heads) + ") must divide d_model (" +
                              std::to_string(c.d_model) + ")");
  }
  c.head_dim = c.d_model / c.n_heads;
  if (c.head_dim % 2 != 0) {
    r.fail_key("n_heads", "gives an odd head_dim d_model/n_heads = " + std::to_string(c.head_dim) +
                              "; RoPE needs it even");
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    r.fail_key("n_kv_heads", "(" + std::to_string(c.n_kv_heads) + ") must divide n_heads (" +
                                 std::to_string(c.n_heads) + ")");
  }
  if (c.vocab_size > c.embedding_size) {
    r.fail_key("vocab_size", "(" + std::to_string(c.vocab_size) +
                                 ") must not exceed embedding_size (" +
                                 std::to_string(c.embedding_size) + ")");
  }
  if (c.include_bias) {
    r.fail_key("include_bias", "= true is unsupported (biases on every linear layer); only "
                               "include_qkv_bias is");
  }

  // Token ids index the embedding rows.
  auto token_id = [&](const std::string& key, const json& v) {
    int64_t id = r.integer(key, v, 0);
    if (id >= c.embedding_size) {
      r.bad(key, "must be below embedding_size (" + std::to_string(c.embedding_size) + ")", v);
    }
    return static_cast<int32_t>(id);
  };
  c.mask_token_id = token_id("mask_token_id", r.required("mask_token_id"));
  c.eos_token_id = token_id("eos_token_id", r.required("eos_token_id"));
  c.stop_token_ids.push_back(c.eos_token_id);
  if (const json* eot = r.get("eot_token_id")) {
    int32_t id = token_id("eot_token_id", *eot);
    if (id != c.eos_token_id) c.stop_token_ids.push_back(id);
  }
  if (c.mask_token_id == c.eos_token_id) {
    r.fail_key("mask_token_id", "equals eos_token_id (" + std::to_string(c.eos_token_id) + ")");
  }
  if (const json* d = r.get("unmask_defaults")) c.defaults = read_defaults(*d, path);
  return c;
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
