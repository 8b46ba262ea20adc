// Tensor-name tables per model family, and binding those names to checked Tensor views.
#include "io/weights.h"

#include <cctype>
#include <set>
#include <string>
#include <tuple>

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
  // The mixture-of-experts families (null elsewhere). "{e}" stands for the expert index.
  const char* wqkv = nullptr;  // fused q/k/v [(H+2K)*head_dim, d]: all Q heads, then K, then V
  const char* bqkv = nullptr;
  const char* q_norm = nullptr;
  const char* k_norm = nullptr;
  const char* router = nullptr;
  const char* expert_bias = nullptr;
  const char* expert_gate = nullptr;
  const char* expert_up = nullptr;
  const char* expert_down = nullptr;
  const char* shared_gate = nullptr;
  const char* shared_up = nullptr;
  const char* shared_down = nullptr;
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

// LLaDA-MoE (LLaDAMoEModelLM): the Qwen2/OLMoE names plus qk-norm and the experts; its shared
// expert is a sibling of the MLP.
constexpr FamilyTensorNames llada_moe_names() {
  FamilyTensorNames n = hugging_face_names("llada_moe");
  n.q_norm = "model.layers.{i}.self_attn.q_norm.weight";
  n.k_norm = "model.layers.{i}.self_attn.k_norm.weight";
  n.router = "model.layers.{i}.mlp.gate.weight";
  n.expert_bias = "model.layers.{i}.mlp.expert_bias";
  n.expert_gate = "model.layers.{i}.mlp.experts.{e}.gate_proj.weight";
  n.expert_up = "model.layers.{i}.mlp.experts.{e}.up_proj.weight";
  n.expert_down = "model.layers.{i}.mlp.experts.{e}.down_proj.weight";
  n.shared_gate = "model.layers.{i}.shared_expert.gate_proj.weight";
  n.shared_up = "model.layers.{i}.shared_expert.up_proj.weight";
  n.shared_down = "model.layers.{i}.shared_expert.down_proj.weight";
  return n;
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
    {
        "llada2",  // LLaDA2MoeModelLM (modeling_llada2_moe.py)
        "model.word_embeddings.weight",
        "model.norm.weight",
        "lm_head.weight",
        "model.layers.{i}.input_layernorm.weight",
        nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,  // q/k/v: fused below
        "model.layers.{i}.attention.dense.weight",
        "model.layers.{i}.post_attention_layernorm.weight",
        "model.layers.{i}.mlp.gate_proj.weight",
        "model.layers.{i}.mlp.up_proj.weight",
        "model.layers.{i}.mlp.down_proj.weight",
        "model.layers.{i}.attention.query_key_value.weight",
        "model.layers.{i}.attention.query_key_value.bias",
        "model.layers.{i}.attention.query_layernorm.weight",
        "model.layers.{i}.attention.key_layernorm.weight",
        "model.layers.{i}.mlp.gate.weight",
        "model.layers.{i}.mlp.gate.expert_bias",
        "model.layers.{i}.mlp.experts.{e}.gate_proj.weight",
        "model.layers.{i}.mlp.experts.{e}.up_proj.weight",
        "model.layers.{i}.mlp.experts.{e}.down_proj.weight",
        "model.layers.{i}.mlp.shared_experts.gate_proj.weight",
        "model.layers.{i}.mlp.shared_experts.up_proj.weight",
        "model.layers.{i}.mlp.shared_experts.down_proj.weight",
    },
    llada_moe_names(),
};

std::string layer_name(const char* pattern, int64_t layer, int64_t expert = -1) {
  std::string name = pattern;
  size_t at = name.find("{i}");
  if (at != std::string::npos) name.replace(at, 3, std::to_string(layer));
  at = name.find("{e}");
  if (at != std::string::npos) name.replace(at, 3, std::to_string(expert));
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
    if (names->wqkv) {
      // Row slices of the fused weight are the three projections: no copy.
      const Tensor qkv = b.matrix(layer_name(names->wqkv, i), q_dim + 2 * kv_dim, d_model);
      l.wq = qkv.row_slice(0, q_dim);
      l.wk = qkv.row_slice(q_dim, kv_dim);
      l.wv = qkv.row_slice(q_dim + kv_dim, kv_dim);
      if (cfg.include_qkv_bias) {
        Tensor bias = b.vector(layer_name(names->bqkv, i), q_dim + 2 * kv_dim, "config has use_qkv_bias true");
        bias.rows = q_dim + 2 * kv_dim;  // [n, 1] for row slicing, then back to vectors
        bias.cols = 1;
        for (auto [part, first, count] : {std::tuple{&l.bq, int64_t{0}, q_dim},
                                          std::tuple{&l.bk, q_dim, kv_dim},
                                          std::tuple{&l.bv, q_dim + kv_dim, kv_dim}}) {
          *part = bias.row_slice(first, count);
          part->rows = 1;
          part->cols = count;
        }
      }
    } else {
      l.wq = b.matrix(layer_name(names->wq, i), q_dim, d_model);
      l.wk = b.matrix(layer_name(names->wk, i), kv_dim, d_model);
      l.wv = b.matrix(layer_name(names->wv, i), kv_dim, d_model);
    }
    if (cfg.qk_norm) {
      l.q_norm = b.vector(layer_name(names->q_norm, i), cfg.head_dim, "the config asks for qk-norm");
      l.k_norm = b.vector(layer_name(names->k_norm, i), cfg.head_dim, "the config asks for qk-norm");
    }
    if (cfg.include_qkv_bias && !names->wqkv) {
      const char* why =
          cfg.family == "llada" ? "config has include_qkv_bias true" : "the family has q/k/v biases";
      l.bq = b.vector(layer_name(names->bq, i), q_dim, why);
      l.bk = b.vector(layer_name(names->bk, i), kv_dim, why);
      l.bv = b.vector(layer_name(names->bv, i), kv_dim, why);
    }
    l.wo = b.matrix(layer_name(names->wo, i), d_model, q_dim);
    l.ffn_norm = b.vector(layer_name(names->ffn_norm, i), d_model);
    const MoeConfig& moe = cfg.moe;
    if (moe.n_experts > 0 && moe.layer_is_moe[static_cast<size_t>(i)]) {
      const int64_t e_hidden = moe.expert_hidden;
      l.router = b.matrix(layer_name(names->router, i), moe.n_experts, d_model);
      if (moe.has_expert_bias) l.expert_bias = b.vector(layer_name(names->expert_bias, i), moe.n_experts);
      for (int64_t e = 0; e < moe.n_experts; e++) {
        l.experts.gate.push_back(b.matrix(layer_name(names->expert_gate, i, e), e_hidden, d_model));
        l.experts.up.push_back(b.matrix(layer_name(names->expert_up, i, e), e_hidden, d_model));
        l.experts.down.push_back(b.matrix(layer_name(names->expert_down, i, e), d_model, e_hidden));
      }
      if (moe.shared_hidden > 0) {
        l.w_gate = b.matrix(layer_name(names->shared_gate, i), moe.shared_hidden, d_model);
        l.w_up = b.matrix(layer_name(names->shared_up, i), moe.shared_hidden, d_model);
        l.w_down = b.matrix(layer_name(names->shared_down, i), d_model, moe.shared_hidden);
      }
    } else {
      l.w_gate = b.matrix(layer_name(names->w_gate, i), hidden, d_model);
      l.w_up = b.matrix(layer_name(names->w_up, i), hidden, d_model);
      l.w_down = b.matrix(layer_name(names->w_down, i), d_model, hidden);
    }
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
