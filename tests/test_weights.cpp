// Weight binding tests on a tiny LLaDA-format checkpoint written to a temp directory.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "io/weights.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// d_model 8, 2 query heads of 4, 1 KV head (GQA), 2 layers, mlp 12, embedding rows 20.
json tiny_config() {
  return json{{"model_type", "llada"}, {"d_model", 8},        {"n_heads", 2},
              {"n_kv_heads", 1},       {"n_layers", 2},       {"mlp_hidden_size", 12},
              {"vocab_size", 18},      {"embedding_size", 20}, {"mask_token_id", 19},
              {"eos_token_id", 1},     {"weight_tying", false}, {"rope", true},
              {"block_type", "llama"}, {"layer_norm_type", "rms"}, {"activation_type", "silu"}};
}

// name -> shape of every tensor the tiny model has; biases and the head are optional extras.
std::map<std::string, std::vector<int64_t>> tiny_tensors(bool head, bool qkv_bias) {
  std::map<std::string, std::vector<int64_t>> t;
  t["model.transformer.wte.weight"] = {20, 8};
  for (int i = 0; i < 2; i++) {
    const std::string p = "model.transformer.blocks." + std::to_string(i) + ".";
    t[p + "attn_norm.weight"] = {8};
    t[p + "q_proj.weight"] = {8, 8};
    t[p + "k_proj.weight"] = {4, 8};
    t[p + "v_proj.weight"] = {4, 8};
    t[p + "attn_out.weight"] = {8, 8};
    t[p + "ff_norm.weight"] = {8};
    t[p + "ff_proj.weight"] = {12, 8};
    t[p + "up_proj.weight"] = {12, 8};
    t[p + "ff_out.weight"] = {8, 12};
    if (qkv_bias) {
      t[p + "q_proj.bias"] = {8};
      t[p + "k_proj.bias"] = {4};
      t[p + "v_proj.bias"] = {4};
    }
  }
  t["model.transformer.ln_f.weight"] = {8};
  if (head) t["model.transformer.ff_out.weight"] = {20, 8};
  return t;
}

// Writes model.safetensors with BF16 matrices and F32 vectors; element k of tensor number n holds
// n + k/1024 so every tensor's contents identify it.
struct TinyModel {
  fs::path dir;
  std::map<std::string, float> first_value;  // tensor -> its element 0

  explicit TinyModel(const std::map<std::string, std::vector<int64_t>>& tensors) {
    std::random_device rd;
    dir = fs::temp_directory_path() /
          ("unmask_w_" + std::to_string(::getpid()) + "_" + std::to_string(rd()));
    fs::create_directories(dir);
    json header = json::object();
    std::string data;
    int n = 0;
    for (const auto& [name, shape] : tensors) {
      const bool matrix = shape.size() == 2;
      int64_t count = 1;
      for (int64_t d : shape) count *= d;
      std::string bytes;
      for (int64_t k = 0; k < count; k++) {
        float v = static_cast<float>(n) + static_cast<float>(k) / 1024.0f;
        if (matrix) {
          uint16_t h = unmask::f32_to_bf16(v);
          bytes.append(reinterpret_cast<const char*>(&h), 2);
        } else {
          bytes.append(reinterpret_cast<const char*>(&v), 4);
        }
      }
      first_value[name] = static_cast<float>(n);
      header[name] = {{"dtype", matrix ? "BF16" : "F32"},
                      {"shape", shape},
                      {"data_offsets", {data.size(), data.size() + bytes.size()}}};
      data += bytes;
      n++;
    }
    std::string text = header.dump();
    while (text.size() % 8) text += ' ';
    std::string out(8, '\0');
    uint64_t len = text.size();
    std::memcpy(out.data(), &len, 8);  // note: little-endian host
    std::ofstream(dir / "model.safetensors", std::ios::binary) << out << text << data;
  }
  ~TinyModel() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  unmask::TensorStore store() const { return unmask::TensorStore::open_dir(dir.string()); }
};

float first(const unmask::Tensor& t) {
  return t.dtype == unmask::DType::F32 ? t.f32()[0]
                                       : unmask::bf16_to_f32(static_cast<const uint16_t*>(t.data)[0]);
}

void check_bind_error(const TinyModel& model, const json& cfg_json, const char* phrase) {
  unmask::ModelConfig cfg = unmask::parse_config(cfg_json, "tiny/config.json");
  unmask::TensorStore store = model.store();
  CHECK_THROWS_WITH_AS(unmask::bind_weights(store, cfg), doctest::Contains(phrase), unmask::Error);
  try {
    unmask::bind_weights(store, cfg);
  } catch (const unmask::Error& e) {
    CHECK(e.exit_code() == unmask::kExitBadInput);
  }
}

}  // namespace

TEST_CASE("weights: a complete untied GQA model binds with the right views") {
  TinyModel model(tiny_tensors(/*head=*/true, /*qkv_bias=*/false));
  unmask::ModelConfig cfg = unmask::parse_config(tiny_config(), "tiny/config.json");
  unmask::TensorStore store = model.store();
  unmask::ModelWeights w = unmask::bind_weights(store, cfg);

  CHECK(w.embedding.rows == 20);
  CHECK(w.embedding.cols == 8);
  CHECK(w.embedding.dtype == unmask::DType::BF16);
  CHECK(first(w.embedding) == model.first_value["model.transformer.wte.weight"]);
  CHECK(w.head.rows == 20);
  CHECK(w.head.data != w.embedding.data);
  CHECK(first(w.head) == model.first_value["model.transformer.ff_out.weight"]);
  CHECK(w.final_norm.rows == 1);
  CHECK(w.final_norm.cols == 8);
  CHECK(w.final_norm.dtype == unmask::DType::F32);
  CHECK(first(w.final_norm) == model.first_value["model.transformer.ln_f.weight"]);

  REQUIRE(w.layers.size() == 2);
  const unmask::LayerWeights& l = w.layers[1];
  const std::string p = "model.transformer.blocks.1.";
  CHECK(l.wq.rows == 8);
  CHECK(l.wq.cols == 8);
  CHECK(l.wk.rows == 4);
  CHECK(l.wv.rows == 4);
  CHECK(l.wo.rows == 8);
  CHECK(l.wo.cols == 8);
  CHECK(l.w_gate.rows == 12);
  CHECK(l.w_up.rows == 12);
  CHECK(l.w_down.rows == 8);
  CHECK(l.w_down.cols == 12);
  CHECK(l.attn_norm.rows == 1);
  CHECK(l.ffn_norm.cols == 8);
  CHECK(l.bq.data == nullptr);
  CHECK(l.bk.data == nullptr);
  CHECK(l.bv.data == nullptr);
  CHECK(first(l.attn_norm) == model.first_value[p + "attn_norm.weight"]);
  CHECK(first(l.wq) == model.first_value[p + "q_proj.weight"]);
  CHECK(first(l.wk) == model.first_value[p + "k_proj.weight"]);
  CHECK(first(l.wv) == model.first_value[p + "v_proj.weight"]);
  CHECK(first(l.wo) == model.first_value[p + "attn_out.weight"]);
  CHECK(first(l.ffn_norm) == model.first_value[p + "ff_norm.weight"]);
  CHECK(first(l.w_gate) == model.first_value[p + "ff_proj.weight"]);
  CHECK(first(l.w_up) == model.first_value[p + "up_proj.weight"]);
  CHECK(first(l.w_down) == model.first_value[p + "ff_out.weight"]);
  CHECK(first(w.layers[0].wq) == model.first_value["model.transformer.blocks.0.q_proj.weight"]);
}

TEST_CASE("weights: tied head is the embedding, q/k/v biases when configured") {
  TinyModel model(tiny_tensors(/*head=*/false, /*qkv_bias=*/true));
  json j = tiny_config();
  j["weight_tying"] = true;
  j["include_qkv_bias"] = true;
  unmask::ModelConfig cfg = unmask::parse_config(j, "tiny/config.json");
  unmask::TensorStore store = model.store();
  unmask::ModelWeights w = unmask::bind_weights(store, cfg);
  CHECK(w.head.data == w.embedding.data);
  CHECK(w.head.rows == 20);
  CHECK(w.head.cols == 8);
  const unmask::LayerWeights& l = w.layers[0];
  REQUIRE(l.bq.data != nullptr);
  CHECK(l.bq.rows == 1);
  CHECK(l.bq.cols == 8);
  CHECK(l.bk.cols == 4);
  CHECK(l.bv.cols == 4);
  CHECK(first(l.bk) == model.first_value["model.transformer.blocks.0.k_proj.bias"]);
}

TEST_CASE("weights: missing tensors name the tensor and the reason") {
  TinyModel model(tiny_tensors(/*head=*/false, /*qkv_bias=*/false));
  check_bind_error(model, tiny_config(),
                   "tensor 'model.transformer.ff_out.weight' is missing (needed by the llada model "
                   "described in tiny/config.json, config has weight_tying false)");
  json j = tiny_config();
  j["weight_tying"] = true;
  j["include_qkv_bias"] = true;
  check_bind_error(model, j, "tensor 'model.transformer.blocks.0.q_proj.bias' is missing");
  j["include_qkv_bias"] = false;
  j["n_layers"] = 3;
  check_bind_error(model, j, "tensor 'model.transformer.blocks.2.attn_norm.weight' is missing");

  auto tensors = tiny_tensors(true, false);
  tensors.erase("model.transformer.blocks.1.up_proj.weight");
  TinyModel partial(tensors);
  check_bind_error(partial, tiny_config(), "tensor 'model.transformer.blocks.1.up_proj.weight' is missing");
}

TEST_CASE("weights: wrong shapes name expected and found") {
  TinyModel model(tiny_tensors(/*head=*/true, /*qkv_bias=*/false));
  json j = tiny_config();
  j["n_kv_heads"] = 2;  // the file has 1 KV head
  check_bind_error(model, j,
                   "tensor 'model.transformer.blocks.0.k_proj.weight' has shape [4, 8], expected [8, 8]");
  j = tiny_config();
  j["mlp_hidden_size"] = 16;
  check_bind_error(model, j, "tensor 'model.transformer.blocks.0.ff_proj.weight' has shape [12, 8], expected [16, 8]");
  j = tiny_config();
  j["embedding_size"] = 24;
  check_bind_error(model, j, "tensor 'model.transformer.wte.weight' has shape [20, 8], expected [24, 8]");

  // A norm weight stored as [1, d_model] instead of [d_model].
  auto tensors = tiny_tensors(true, false);
  tensors["model.transformer.ln_f.weight"] = {1, 8};
  TinyModel odd(tensors);
  check_bind_error(odd, tiny_config(), "tensor 'model.transformer.ln_f.weight' has shape [1, 8], expected [8]");
}
