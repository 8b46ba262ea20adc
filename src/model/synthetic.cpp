// Synthetic model shapes (named or from a config.json) and their random, backend-resident weights.
#include "model/synthetic.h"

#include <unistd.h>

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
    fail_usage("--synthetic: '" + spec + "' is neither llada-8b, dream-7b, default nor a config.json file");
  return from_file(spec, spec);
}

double synthetic_weight_bytes(const SyntheticSpec& spec) {
  const ModelConfig& c = spec.config;
  const double d = static_cast<double>(c.d_model), q = static_cast<double>(c.n_heads * c.head_dim),
               kv = static_cast<double>(c.n_kv_heads * c.head_dim), f = static_cast<double>(c.mlp_hidden);
  const double layer = d * q * 2 + d * kv * 2 + 3 * d * f + 2 * d;
  const double emb = static_cast<double>(c.embedding_size) * d * (c.weight_tying ? 1 : 2);
  return (emb + static_cast<double>(c.n_layers) * layer + d) * static_cast<double>(dtype_bytes(spec.dtype));
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
                 " GB of memory (a smaller shape, or --backend cuda)");
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
    l.w_gate = matrix(c.mlp_hidden, c.d_model);
    l.w_up = matrix(c.mlp_hidden, c.d_model);
    l.w_down = matrix(c.d_model, c.mlp_hidden);
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
