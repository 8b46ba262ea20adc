// Tensor-name tables per model family, and binding those names to checked Tensor views.
#include "io/weights.h"

#include <cctype>
#include <set>
#include <string>

#include "common.h"

namespace unmask {

namespace {

// The tensor names of one family; "{i}" stands for the layer index. A new family with the same
// block structure (Dream/Qwen2, Llama) is a new row here, not new code.
struct FamilyTensorNames {
  const char* family;
  const char* embedding;
  const char* final_norm;
  const char* head;  // unused when weight_tying
  const char* attn_norm;
  const char* wq;
  const char* wk;
  const char* wv;
  const char* bq;
  const char* bk;
  const char* bv;
  const char* wo;
  const char* ffn_norm;
  const char* w_gate;
  const char* w_up;
  const char* w_down;
};

// Qwen2 and Llama checkpoints share these names; only Qwen2 stores the q/k/v biases.
constexpr FamilyTensorNames hugging_face_names(const char* family) {
  return {
      family,
      "model.embed_tokens.weight",
      "model.norm.weight",
      "lm_head.weight",
      "model.layers.{i}.input_layernorm.weight",
      "model.layers.{i}.self_attn.q_proj.weight",
      "model.layers.{i}.self_attn.k_proj.weight",
      "model.layers.{i}.self_attn.v_proj.weight",
      "model.layers.{i}.self_attn.q_proj.bias",
      "model.layers.{i}.self_attn.k_proj.bias",
      "model.layers.{i}.self_attn.v_proj.bias",
      "model.layers.{i}.self_attn.o_proj.weight",
      "model.layers.{i}.post_attention_layernorm.weight",
      "model.layers.{i}.mlp.gate_proj.weight",
      "model.layers.{i}.mlp.up_proj.weight",
      "model.layers.{i}.mlp.down_proj.weight",
  };
}

const FamilyTensorNames kFamilies[] = {
    {
        "llada",
        "model.transformer.wte.weight",
        "model.transformer.ln_f.weight",
        "model.transformer.ff_out.weight",
        "model.transformer.blocks.{i}.attn_norm.weight",
        "model.transformer.blocks.{i}.q_proj.weight",
        "model.transformer.blocks.{i}.k_proj.weight",
        "model.transformer.blocks.{i}.v_proj.weight",
        "model.transformer.blocks.{i}.q_proj.bias",
        "model.transformer.blocks.{i}.k_proj.bias",
        "model.transformer.blocks.{i}.v_proj.bias",
        "model.transformer.blocks.{i}.attn_out.weight",
        "model.transformer.blocks.{i}.ff_norm.weight",
        "model.transformer.blocks.{i}.ff_proj.weight",
        "model.transformer.blocks.{i}.up_proj.weight",
        "model.transformer.blocks.{i}.ff_out.weight",
    },
    hugging_face_names("dream"),  // Qwen2 names (Dream-v0)
    hugging_face_names("llama"),  // LlamaForCausalLM names (DiffuLLaMA)
};

std::string layer_name(const char* pattern, int64_t layer) {
  std::string name = pattern;
  size_t at = name.find("{i}");
  if (at != std::string::npos) name.replace(at, 3, std::to_string(layer));
  return name;
}

class Binder {
 public:
  Binder(const TensorStore& store, const ModelConfig& cfg) : store_(store), cfg_(cfg) {}
  const std::set<std::string>& bound() const { return bound_; }

  // A matrix stored as [rows, cols].
  Tensor matrix(const std::string& name, int64_t rows, int64_t cols, const char* why = nullptr) const {
    return bind(name, {rows, cols}, rows, cols, why);
  }
  // A vector stored as [n], viewed as [1, n].
  Tensor vector(const std::string& name, int64_t n, const char* why = nullptr) const {
    return bind(name, {n}, 1, n, why);
  }

 private:
  Tensor bind(const std::string& name, const std::vector<int64_t>& expected, int64_t rows,
              int64_t cols, const char* why) const {
    const TensorInfo* info = store_.find(name);
    if (info == nullptr) {
      fail_input(store_.source() + ": tensor '" + name + "' is missing (needed by the " +
                 cfg_.family + " model described in " + cfg_.path +
                 (why ? std::string(", ") + why : std::string()) + ")");
    }
    if (info->shape != expected) {
      fail_input(store_.source() + ": tensor '" + name + "' has shape " +
                 shape_string(info->shape) + ", expected " + shape_string(expected) +
                 " from " + cfg_.path);
    }
    bound_.insert(name);
    Tensor t;
    t.data = const_cast<void*>(info->data);  // note: mapped read-only; never written through
    t.dtype = info->dtype;
    t.rows = rows;
    t.cols = cols;
    return t;
  }

  const TensorStore& store_;
  const ModelConfig& cfg_;
  mutable std::set<std::string> bound_;
};

// The layer index of `name` under the family's layer prefix ("model.layers.7.x" -> 7), or -1.
int64_t layer_of(const std::string& name, const FamilyTensorNames& names) {
  const std::string pattern = names.attn_norm;
  const std::string prefix = pattern.substr(0, pattern.find("{i}"));
  if (name.rfind(prefix, 0) != 0) return -1;
  size_t end = prefix.size();
  while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end]))) end++;
  if (end == prefix.size() || end >= name.size() || name[end] != '.' || end - prefix.size() > 9) return -1;
  return std::stoll(name.substr(prefix.size(), end - prefix.size()));
}

// Stored tensors the model does not use: a layer past the config's count is an error (the count
// is wrong, and the model would silently run without it); anything else is said.
void check_unused(const TensorStore& store, const ModelConfig& cfg, const FamilyTensorNames& names,
                  const std::set<std::string>& bound, std::vector<std::string>* notes) {
  std::vector<std::string> unused;
  for (const auto& [name, info] : store.tensors()) {
    if (bound.count(name)) continue;
    if (cfg.weight_tying && name == names.head) continue;  // said where the head is bound
    if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;  // a cache, not a weight
    const int64_t layer = layer_of(name, names);
    if (layer >= cfg.n_layers) {
      fail_input(store.source() + ": tensor '" + name + "' belongs to layer " + std::to_string(layer) +
                 ", but " + cfg.path + " gives " + std::to_string(cfg.n_layers) +
                 " layers (" + (cfg.family == "llada" ? "n_layers" : "num_hidden_layers") + "); fix the count");
    }
    unused.push_back(name);
  }
  if (unused.empty() || !notes) return;
  std::string list;
  for (size_t i = 0; i < unused.size() && i < 5; i++) list += (i ? ", " : "") + ("'" + unused[i] + "'");
  if (unused.size() > 5) list += ", ...";
  notes->push_back(store.source() + ": " + std::to_string(unused.size()) + " stored tensor(s) are not used by the " +
                   cfg.family + " model described in " + cfg.path + ": " + list);
}

}  // namespace

ModelWeights bind_weights(const TensorStore& store, const ModelConfig& cfg, std::vector<std::string>* notes) {
  const FamilyTensorNames* names = nullptr;
  for (const FamilyTensorNames& f : kFamilies) {
    if (cfg.family == f.family) names = &f;
  }
  UNMASK_CHECK(names != nullptr, "no tensor-name table for family '" << cfg.family << "'");

  const Binder b(store, cfg);
  const int64_t d_model = cfg.d_model;
  const int64_t q_dim = cfg.n_heads * cfg.head_dim;
  const int64_t kv_dim = cfg.n_kv_heads * cfg.head_dim;
  const int64_t hidden = cfg.mlp_hidden;

  ModelWeights w;
  w.embedding = b.matrix(names->embedding, cfg.embedding_size, d_model);
  // note: no reserve by the config's layer count: a bad count must fail at its first missing
  // tensor, not in an allocation sized by it.
  for (int64_t i = 0; i < cfg.n_layers; i++) {
    LayerWeights l;
    l.attn_norm = b.vector(layer_name(names->attn_norm, i), d_model);
    l.wq = b.matrix(layer_name(names->wq, i), q_dim, d_model);
    l.wk = b.matrix(layer_name(names->wk, i), kv_dim, d_model);
    l.wv = b.matrix(layer_name(names->wv, i), kv_dim, d_model);
    if (cfg.include_qkv_bias) {
      const char* why =
          cfg.family == "llada" ? "config has include_qkv_bias true" : "the family has q/k/v biases";
      l.bq = b.vector(layer_name(names->bq, i), q_dim, why);
      l.bk = b.vector(layer_name(names->bk, i), kv_dim, why);
      l.bv = b.vector(layer_name(names->bv, i), kv_dim, why);
    }
    l.wo = b.matrix(layer_name(names->wo, i), d_model, q_dim);
    l.ffn_norm = b.vector(layer_name(names->ffn_norm, i), d_model);
    l.w_gate = b.matrix(layer_name(names->w_gate, i), hidden, d_model);
    l.w_up = b.matrix(layer_name(names->w_up, i), hidden, d_model);
    l.w_down = b.matrix(layer_name(names->w_down, i), d_model, hidden);
    w.layers.push_back(l);
  }
  w.final_norm = b.vector(names->final_norm, d_model);
  if (cfg.weight_tying && notes && store.find(names->head))
    notes->push_back(cfg.path + ": " + (cfg.family == "llada" ? "weight_tying" : "tie_word_embeddings") +
                     " is true, so the output head is the embedding '" + names->embedding +
                     "'; the stored '" + names->head + "' is ignored (as transformers ties them)");
  w.head = cfg.weight_tying
               ? w.embedding
               : b.matrix(names->head, cfg.embedding_size, d_model, cfg.family == "llada" ? "config has weight_tying false" : "config has tie_word_embeddings false");
  check_unused(store, cfg, *names, b.bound(), notes);
  return w;
}

}  // namespace unmask
