// Synthetic model shapes (named or from a config.json) and their random, backend-resident weights.
#include "model/synthetic.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common.h"
#include "io/model_dir.h"
#include "model/rng.h"

namespace unmask {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// GSAI-ML/LLaDA-8B-Instruct's config.json, the keys the loader reads.
const char* kLlada8b = R"({
  "model_type": "llada", "d_model": 4096, "n_heads": 32, "n_kv_heads": 32, "n_layers": 32,
  "mlp_hidden_size": 12288, "vocab_size": 126464, "embedding_size": 126464,
  "max_sequence_length": 4096, "rope_theta": 500000.0, "rms_norm_eps": 1e-05,
  "mask_token_id": 126336, "eos_token_id": 126081, "eot_token_id": 126348,
  "weight_tying": false, "include_bias": false, "include_qkv_bias": false,
  "rope": true, "block_type": "llama", "layer_norm_type": "rms", "activation_type": "silu",
  "torch_dtype": "bfloat16"})";

// Dream-org/Dream-v0-Instruct-7B's config.json (Qwen2 keys), the keys the loader reads.
const char* kDream7b = R"({
  "architectures": ["DreamModel"], "model_type": "Dream", "hidden_size": 3584,
  "intermediate_size": 18944, "num_attention_heads": 28, "num_key_value_heads": 4,
  "num_hidden_layers": 28, "vocab_size": 152064, "max_position_embeddings": 131072,
  "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "tie_word_embeddings": false,
  "hidden_act": "silu", "use_sliding_window": false, "mask_token_id": 151666,
  "eos_token_id": 151643, "torch_dtype": "bfloat16"})";

// LLaDA2.0-mini (inclusionAI, model_type llada2_moe): the values of its published config.json,
// written as its config.json spells them. 16B parameters, 32 GB in bf16: with --layers, the first
// layers of it (layer 0 dense, the rest MoE). The published config apparently carries no
// mask_token_id (generate() takes 156895); it is written here so no default is assumed.
// max_position_embeddings (32768) is the configuration class's default, not a published value.
const char* kLlada2Mini = R"({
  "architectures": ["LLaDA2MoeModelLM"], "model_type": "llada2_moe",
  "hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 4, "head_dim": 128,
  "num_hidden_layers": 20, "first_k_dense_replace": 1, "intermediate_size": 5120,
  "moe_intermediate_size": 512, "num_experts": 256, "num_experts_per_tok": 8, "n_group": 8,
  "topk_group": 4, "num_shared_experts": 1, "routed_scaling_factor": 2.5,
  "partial_rotary_factor": 0.5, "rope_theta": 600000, "rms_norm_eps": 1e-06, "vocab_size": 157184,
  "max_position_embeddings": 32768, "use_qk_norm": true, "use_qkv_bias": false, "use_bias": false,
  "tie_word_embeddings": false, "hidden_act": "silu", "mask_token_id": 156895,
  "eos_token_id": 156892, "pad_token_id": 156892, "torch_dtype": "bfloat16"})";

// LLaDA-MoE-7B-A1B (inclusionAI, architectures LLaDAMoEModelLM): hidden 2048, 16
// layers, 16 heads and 16 KV heads (head_dim 128), 64 experts of width 1024, top 8, every layer
// MoE, no shared expert, softmax routing without an expert bias, qk-norm, vocab 157184, mask
// 156895, eos 156892. From secondary sources (a third-party port's summary of the published
// config.json, not the file itself): rope_theta 50000, max_position_embeddings 8192,
// dense_intermediate_size 8192 (unused: no layer is dense); rms_norm_eps 1e-5 and
// partial_rotary_factor 1.0 are the configuration class's defaults.
const char* kLladaMoe7b = R"({
  "architectures": ["LLaDAMoEModelLM"], "model_type": "llada",
  "hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 16,
  "num_hidden_layers": 16, "num_experts": 64, "num_experts_per_tok": 8,
  "expert_intermediate_size": 1024, "dense_intermediate_size": 8192,
  "shared_expert_intermediate_size": null,
  "moe_layer_freq": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
  "moe_router_enable_expert_bias": false, "qk_layernorm": true, "partial_rotary_factor": 1.0,
  "rope_theta": 50000.0, "rms_norm_eps": 1e-05, "max_position_embeddings": 8192,
  "attention_bias": false, "clip_qkv": null, "vocab_size": 157184, "tie_word_embeddings": false,
  "hidden_act": "silu", "mask_token_id": 156895, "eos_token_id": 156892,
  "torch_dtype": "bfloat16"})";

// tests/fixtures/tiny-f32-gqa's shape: the fallback when no bundled model is around.
const char* kTiny = R"({
  "model_type": "llada", "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "n_layers": 2,
  "mlp_hidden_size": 96, "vocab_size": 400, "embedding_size": 408, "max_sequence_length": 128,
  "mask_token_id": 1, "eos_token_id": 2, "weight_tying": false, "torch_dtype": "float32",
  "rope": true, "block_type": "llama", "layer_norm_type": "rms", "activation_type": "silu"})";

DType dtype_of(const json& j, const std::string& where) {
  auto it = j.find("torch_dtype");
  if (it == j.end() || it->is_null()) return DType::F32;
  const std::string name = it->is_string() ? it->get<std::string>() : "";
  if (name == "bfloat16") return DType::BF16;
  if (name == "float16") return DType::F16;
  if (name == "float32") return DType::F32;
  fail_input(where + ": key 'torch_dtype' must be bfloat16, float16 or float32 (got " + it->dump() + ")");
}

SyntheticSpec from_json(const json& j, const std::string& name, const std::string& where) {
  SyntheticSpec s;
  s.name = name;
  s.config = parse_config(j, where);
  s.dtype = dtype_of(j, where);
  s.shape_layers = s.config.n_layers;
  return s;
}

SyntheticSpec from_file(const std::string& path, const std::string& name) {
  std::ifstream in(path);
  if (!in) fail_input(path + ": cannot read");
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail_input(path + ": not valid JSON");
  return from_json(j, name, path);
}

}  // namespace

SyntheticSpec synthetic_spec(const std::string& spec) {
  if (spec == "llada-8b") return from_json(json::parse(kLlada8b), spec, "synthetic:llada-8b");
  if (spec == "dream-7b") return from_json(json::parse(kDream7b), spec, "synthetic:dream-7b");
  if (spec == "llada2-mini") return from_json(json::parse(kLlada2Mini), spec, "synthetic:llada2-mini");
  if (spec == "llada-moe-7b") return from_json(json::parse(kLladaMoe7b), spec, "synthetic:llada-moe-7b");
  if (spec == "default") {
    std::string dir;
    try {
      dir = resolve_model_dir("");
    } catch (const Error&) {
      return from_json(json::parse(kTiny), spec, "synthetic:default");
    }
    return from_file((fs::path(dir) / "config.json").string(), spec);
  }
  std::error_code ec;
  if (!fs::is_regular_file(spec, ec))
    fail_usage("--synthetic: '" + spec + "' is neither llada-8b, dream-7b, llada2-mini, llada-moe-7b, "
               "default nor a config.json file");
  return from_file(spec, spec);
}

void keep_layers(SyntheticSpec& spec, int64_t layers) {
  const int64_t all = spec.shape_layers > 0 ? spec.shape_layers : spec.config.n_layers;
  if (layers < 1 || layers > all)
    fail_usage("--layers " + std::to_string(layers) + ": must be in [1, " + std::to_string(all) +
               "], the layers of " + spec.name + "'s shape");
  ModelConfig& c = spec.config;
  c.n_layers = layers;
  if (!c.moe.layer_is_moe.empty()) c.moe.layer_is_moe.resize(static_cast<size_t>(layers));
}

double synthetic_weight_bytes(const SyntheticSpec& spec) {
  const ModelConfig& c = spec.config;
  const double d = static_cast<double>(c.d_model), q = static_cast<double>(c.n_heads * c.head_dim),
               kv = static_cast<double>(c.n_kv_heads * c.head_dim), f = static_cast<double>(c.mlp_hidden);
  const double attention = d * q * 2 + d * kv * 2 + 2 * d + (c.qk_norm ? 2.0 * c.head_dim : 0.0) +
                           (c.include_qkv_bias ? q + 2 * kv : 0.0);
  const MoeConfig& m = c.moe;
  const double experts = static_cast<double>(m.n_experts);
  // router, routed experts, shared expert
  const double moe_layer = experts * d + 3.0 * d * static_cast<double>(m.expert_hidden) * experts +
                           3.0 * d * static_cast<double>(m.shared_hidden);
  const auto& is_moe = m.layer_is_moe;
  const double moe_layers = m.n_experts > 0 ? static_cast<double>(std::count(is_moe.begin(), is_moe.end(), true)) : 0.0;
  const double layers = static_cast<double>(c.n_layers);
  const double elements = static_cast<double>(c.embedding_size) * d * (c.weight_tying ? 1 : 2) + d +
                          layers * attention + (layers - moe_layers) * 3 * d * f + moe_layers * moe_layer;
  // Expert biases are stored f32 whatever the dtype.
  const double f32_bytes = m.has_expert_bias ? moe_layers * 4.0 * experts : 0.0;
  return elements * static_cast<double>(dtype_bytes(spec.dtype)) + f32_bytes;
}

SyntheticModel::SyntheticModel(Backend& backend, const SyntheticSpec& spec)
    : backend_(backend), spec_(spec) {
  const ModelConfig& c = spec_.config;
  if (backend.name() == "cpu") {
    const double bytes = synthetic_weight_bytes(spec);
    const double memory = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGE_SIZE));
    if (memory > 0 && bytes > memory)
      fail_usage("--synthetic " + spec.name + ": its weights need " + std::to_string(static_cast<int64_t>(bytes / 1e9)) +
                 " GB, more than this machine's " + std::to_string(static_cast<int64_t>(memory / 1e9)) +
                 " GB of memory (a smaller shape, fewer layers with --layers, or --backend cuda)");
  }
  const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  uint64_t seed = 0x5EED;  // one stream per tensor, in a fixed order: identical on every backend
  auto matrix = [&](int64_t rows, int64_t cols) {
    return backend_.random_weight(rows, cols, spec_.dtype, seed++,
                                  static_cast<float>(1.0 / std::sqrt(static_cast<double>(cols))));
  };
  // note: embeddings are not scaled down; the first RMSNorm normalises them anyway.
  weights_.embedding = backend_.random_weight(c.embedding_size, c.d_model, spec_.dtype, seed++, 1.f);
  for (int64_t i = 0; i < c.n_layers; i++) {
    LayerWeights l;
    l.attn_norm = ones(c.d_model);
    l.wq = matrix(q_dim, c.d_model);
    l.wk = matrix(kv_dim, c.d_model);
    l.wv = matrix(kv_dim, c.d_model);
    if (c.include_qkv_bias) {
      l.bq = backend_.random_weight(1, q_dim, spec_.dtype, seed++, 0.02f);
      l.bk = backend_.random_weight(1, kv_dim, spec_.dtype, seed++, 0.02f);
      l.bv = backend_.random_weight(1, kv_dim, spec_.dtype, seed++, 0.02f);
    }
    l.wo = matrix(c.d_model, q_dim);
    l.ffn_norm = ones(c.d_model);
    if (c.qk_norm) {
      l.q_norm = ones(c.head_dim);
      l.k_norm = ones(c.head_dim);
    }
    const MoeConfig& m = c.moe;
    if (m.n_experts > 0 && m.layer_is_moe[static_cast<size_t>(i)]) {
      // note: the order below fixes each tensor's stream; dense layers keep the order they
      // always had, so the dense shapes' weights are unchanged.
      l.router = matrix(m.n_experts, c.d_model);
      if (m.has_expert_bias)  // f32, as checkpoints store it; small against the sigmoid scores
        l.expert_bias = backend_.random_weight(1, m.n_experts, DType::F32, seed++, 0.01f);
      for (int64_t e = 0; e < m.n_experts; e++) {
        l.experts.gate.push_back(matrix(m.expert_hidden, c.d_model));
        l.experts.up.push_back(matrix(m.expert_hidden, c.d_model));
        l.experts.down.push_back(matrix(c.d_model, m.expert_hidden));
      }
      if (m.shared_hidden > 0) {
        l.w_gate = matrix(m.shared_hidden, c.d_model);
        l.w_up = matrix(m.shared_hidden, c.d_model);
        l.w_down = matrix(c.d_model, m.shared_hidden);
      }
    } else {
      l.w_gate = matrix(c.mlp_hidden, c.d_model);
      l.w_up = matrix(c.mlp_hidden, c.d_model);
      l.w_down = matrix(c.d_model, c.mlp_hidden);
    }
    weights_.layers.push_back(l);
  }
  weights_.final_norm = ones(c.d_model);
  weights_.head = c.weight_tying ? weights_.embedding : matrix(c.embedding_size, c.d_model);
  model_ = std::make_unique<Model>(backend_, c, weights_, /*resident=*/true);
}

SyntheticModel::~SyntheticModel() {
  model_.reset();
  for (void* p : owned_) backend_.free(p);
}

Tensor SyntheticModel::ones(int64_t n) {
  Tensor t;
  t.rows = 1;
  t.cols = n;
  t.dtype = spec_.dtype;
  t.data = backend_.alloc(t.n_bytes());
  owned_.push_back(t.data);
  std::vector<uint16_t> half(static_cast<size_t>(n));
  std::vector<float> full;
  const void* src = half.data();
  switch (spec_.dtype) {
    case DType::F32: full.assign(static_cast<size_t>(n), 1.f); src = full.data(); break;
    case DType::BF16: half.assign(half.size(), f32_to_bf16(1.f)); break;
    case DType::F16: half.assign(half.size(), f32_to_f16(1.f)); break;
  }
  backend_.upload(t.data, src, t.n_bytes());
  return t;
}

std::vector<int32_t> random_prompt(const ModelConfig& config, int n, uint64_t seed) {
  std::vector<int32_t> ids;
  ids.reserve(static_cast<size_t>(n));
  const uint64_t range = static_cast<uint64_t>(config.vocab_size);
  for (uint32_t i = 0; static_cast<int>(ids.size()) < n; i++) {
    const int32_t id = static_cast<int32_t>(noise_bits(seed, kStreamSynthetic, 1, i, 0) % range);
    if (id == config.mask_token_id) continue;
    bool stop = false;
    for (int32_t s : config.stop_token_ids) stop = stop || id == s;
    if (!stop) ids.push_back(id);
  }
  return ids;
}

}  // namespace unmask
