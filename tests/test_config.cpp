// config.json tests: the real LLaDA-8B config, GQA, tying, defaults, and each bad key.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "common.h"
#include "io/config.h"

using nlohmann::json;

namespace {

// The config.json of GSAI-ML/LLaDA-8B-Instruct, with its many unused OLMo keys.
json llada_8b() {
  return json::parse(R"({
    "activation_type": "silu", "alibi": false, "alibi_bias_max": 8.0,
    "architectures": ["LLaDAModelLM"], "attention_dropout": 0.0, "attention_layer_norm": false,
    "attention_layer_norm_with_affine": true,
    "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                 "AutoModel": "modeling_llada.LLaDAModelLM"},
    "bias_for_layer_norm": false, "block_group_size": 1, "block_type": "llama",
    "d_model": 4096, "embedding_dropout": 0.0, "embedding_size": 126464, "eos_token_id": 126081,
    "flash_attention": false, "include_bias": false, "include_qkv_bias": false,
    "init_cutoff_factor": null, "init_device": "meta", "init_fn": "mitchell", "init_std": 0.02,
    "input_emb_norm": false, "layer_norm_type": "rms", "layer_norm_with_affine": true,
    "mask_token_id": 126336, "max_sequence_length": 4096, "mlp_hidden_size": 12288,
    "mlp_ratio": 4, "model_type": "llada", "multi_query_attention": null, "n_heads": 32,
    "n_kv_heads": 32, "n_layers": 32, "pad_token_id": 126081, "precision": "amp_bf16",
    "residual_dropout": 0.0, "rms_norm_eps": 1e-05, "rope": true, "rope_full_precision": true,
    "rope_theta": 500000.0, "scale_logits": false, "transformers_version": "4.46.3",
    "use_cache": false, "vocab_size": 126464, "weight_tying": false
  })");
}

// The smallest config that names every required key, and the four switches whose absence means
// a model unmask does not run.
json minimal() {
  return json{{"model_type", "llada"}, {"d_model", 64},      {"n_heads", 4},
              {"n_layers", 2},         {"mlp_hidden_size", 128}, {"vocab_size", 100},
              {"mask_token_id", 99},   {"eos_token_id", 1},   {"rope", true},
              {"block_type", "llama"}, {"layer_norm_type", "rms"}, {"activation_type", "silu"}};
}

const char* kPath = "models/x/config.json";

void check_config_error(const json& j, const char* phrase) {
  INFO("config: ", j.dump());
  CHECK_THROWS_WITH_AS(unmask::parse_config(j, kPath), doctest::Contains(phrase), unmask::Error);
  try {
    unmask::parse_config(j, kPath);
  } catch (const unmask::Error& e) {
    CHECK(e.exit_code() == unmask::kExitBadInput);
    CHECK(std::string(e.what()).rfind(std::string(kPath) + ": ", 0) == 0);
  }
}

json with(json j, const std::string& key, const json& value) {
  j[key] = value;
  return j;
}
json without(json j, const std::string& key) {
  j.erase(key);
  return j;
}

}  // namespace

TEST_CASE("config: the LLaDA-8B config") {
  unmask::ModelConfig c = unmask::parse_config(llada_8b(), kPath);
  CHECK(c.path == kPath);
  CHECK(c.family == "llada");
  CHECK(c.d_model == 4096);
  CHECK(c.n_heads == 32);
  CHECK(c.n_kv_heads == 32);
  CHECK(c.head_dim == 128);
  CHECK(c.n_layers == 32);
  CHECK(c.mlp_hidden == 12288);
  CHECK(c.vocab_size == 126464);
  CHECK(c.embedding_size == 126464);
  CHECK(c.max_seq_len == 4096);
  CHECK(c.mask_token_id == 126336);
  CHECK(c.eos_token_id == 126081);
  CHECK(c.stop_token_ids == std::vector<int32_t>{126081});
  CHECK(c.rope_theta == 500000.0);
  CHECK(c.rms_eps == doctest::Approx(1e-5));
  CHECK_FALSE(c.weight_tying);
  CHECK_FALSE(c.include_bias);
  CHECK_FALSE(c.include_qkv_bias);
  CHECK(c.defaults.gen_length == 0);
  CHECK(c.defaults.steps == 0);
  CHECK(c.defaults.block_length == 0);
}

TEST_CASE("config: defaults, GQA, tying, eot and unmask_defaults") {
  // Absent keys: configuration_llada.py's defaults, each said in `assumed`.
  unmask::ModelConfig c = unmask::parse_config(minimal(), kPath);
  CHECK(c.n_kv_heads == 4);
  CHECK(c.head_dim == 16);
  CHECK(c.embedding_size == 50304);
  CHECK(c.max_seq_len == 1024);
  CHECK(c.rope_theta == 10000.0);
  CHECK(c.rms_eps == doctest::Approx(1e-5));
  CHECK(c.weight_tying);
  CHECK(c.assumed == std::vector<std::string>{"embedding_size 50304", "max_sequence_length 1024",
                                              "rope_theta 10000", "rms_norm_eps 1e-05", "weight_tying true"});
  CHECK(unmask::parse_config(llada_8b(), kPath).assumed.empty());
  // null embedding_size means vocab_size; no mlp_hidden_size means mlp_ratio x d_model.
  c = unmask::parse_config(with(without(minimal(), "mlp_hidden_size"), "embedding_size", nullptr), kPath);
  CHECK(c.embedding_size == 100);
  CHECK(c.mlp_hidden == 256);
  c = unmask::parse_config(with(without(minimal(), "mlp_hidden_size"), "mlp_ratio", 3), kPath);
  CHECK(c.mlp_hidden == 192);

  json j = minimal();
  j["n_kv_heads"] = 2;
  j["weight_tying"] = true;
  j["include_qkv_bias"] = true;
  j["embedding_size"] = 128;
  j["eot_token_id"] = 120;
  j["rope_theta"] = 1000000;  // an integer where a number is expected is fine
  j["rms_norm_eps"] = 1e-6;
  j["unmask_defaults"] = {{"gen_length", 128}, {"steps", 64}, {"block_length", 32}};
  c = unmask::parse_config(j, kPath);
  CHECK(c.n_kv_heads == 2);
  CHECK(c.weight_tying);
  CHECK(c.include_qkv_bias);
  CHECK(c.embedding_size == 128);
  CHECK(c.stop_token_ids == std::vector<int32_t>{1, 120});
  CHECK(c.rope_theta == 1e6);
  CHECK(c.rms_eps == doctest::Approx(1e-6));
  CHECK(c.defaults.gen_length == 128);
  CHECK(c.defaults.steps == 64);
  CHECK(c.defaults.block_length == 32);

  // Family from "architectures" when model_type is absent; null means "use the default".
  j = without(minimal(), "model_type");
  j["architectures"] = {"Other", "LLaDAModelLM"};
  j["n_kv_heads"] = nullptr;
  c = unmask::parse_config(j, kPath);
  CHECK(c.family == "llada");
  CHECK(c.n_kv_heads == 4);
}

TEST_CASE("config: model family errors") {
  check_config_error(with(minimal(), "model_type", "gpt2"),
                     "models/x/config.json: unsupported model_type 'gpt2' (supported: llada, Dream, llama, llada2_moe, lladamoe)");
  check_config_error(with(minimal(), "model_type", 3), "key 'model_type' must be a string (got 3)");
  check_config_error(without(minimal(), "model_type"), "no 'model_type'");
  check_config_error(with(without(minimal(), "model_type"), "architectures", {"GPT2LMHeadModel"}),
                     "'architectures' lists no supported architecture (LLaDAModelLM, DreamModel, "
                     "LlamaForCausalLM, LLaDA2MoeModelLM, LLaDAMoEModelLM)");
  check_config_error(json::array(), "not a JSON object");
  check_config_error(with(minimal(), "alibi", true), "key 'alibi' is unsupported unless false (got true)");
  check_config_error(with(minimal(), "rope", false), "key 'rope' is unsupported unless true");
  check_config_error(with(minimal(), "block_type", "sequential"),
                     "key 'block_type' is unsupported unless \"llama\" (got \"sequential\")");
  check_config_error(with(minimal(), "layer_norm_type", "default"), "key 'layer_norm_type'");
  check_config_error(with(minimal(), "activation_type", "gelu"), "key 'activation_type'");
}

TEST_CASE("config: missing and mistyped keys") {
  for (const char* key : {"d_model", "n_heads", "n_layers", "vocab_size", "mask_token_id", "eos_token_id"}) {
    CAPTURE(key);
    check_config_error(without(minimal(), key), (std::string("missing required key '") + key + "'").c_str());
  }
  check_config_error(with(minimal(), "n_heads", "eight"),
                     "models/x/config.json: key 'n_heads' must be a positive integer (got \"eight\")");
  check_config_error(with(minimal(), "n_heads", 0), "key 'n_heads' must be a positive integer (got 0)");
  check_config_error(with(minimal(), "d_model", -64), "key 'd_model' must be a positive integer (got -64)");
  check_config_error(with(minimal(), "d_model", 64.0), "key 'd_model' must be a positive integer (got 64.0)");
  check_config_error(with(minimal(), "d_model", true), "key 'd_model' must be a positive integer (got true)");
  check_config_error(with(minimal(), "n_layers", 1ll << 40), "key 'n_layers' must be at most 2147483647");
  check_config_error(with(minimal(), "mlp_hidden_size", json::array()), "(got an array)");
  check_config_error(with(minimal(), "n_kv_heads", 0), "key 'n_kv_heads' must be a positive integer");
  check_config_error(with(minimal(), "max_sequence_length", "4k"), "key 'max_sequence_length'");
  check_config_error(with(minimal(), "embedding_size", -1), "key 'embedding_size'");
  check_config_error(with(minimal(), "rope_theta", 0), "key 'rope_theta' must be a positive number (got 0)");
  check_config_error(with(minimal(), "rope_theta", "1e4"), "key 'rope_theta' must be a positive number");
  check_config_error(with(minimal(), "rms_norm_eps", -1e-5), "key 'rms_norm_eps' must be a positive number");
  check_config_error(with(minimal(), "weight_tying", 1), "key 'weight_tying' must be true or false (got 1)");
  check_config_error(with(minimal(), "include_qkv_bias", "no"), "key 'include_qkv_bias' must be true or false");
  check_config_error(with(minimal(), "include_bias", true), "key 'include_bias' = true is unsupported");
}

TEST_CASE("config: inconsistent sizes and token ids") {
  check_config_error(with(minimal(), "n_heads", 3), "key 'n_heads' (3) must divide d_model (64)");
  check_config_error(with(with(minimal(), "d_model", 36), "n_heads", 4), "odd head_dim");
  check_config_error(with(minimal(), "n_kv_heads", 3), "key 'n_kv_heads' (3) must divide n_heads (4)");
  check_config_error(with(minimal(), "embedding_size", 50),
                     "key 'vocab_size' (100) must not exceed embedding_size (50)");
  check_config_error(with(with(minimal(), "embedding_size", 100), "mask_token_id", 100),
                     "key 'mask_token_id' must be below embedding_size (100) (got 100)");
  check_config_error(with(minimal(), "mask_token_id", -1),
                     "key 'mask_token_id' must be a non-negative integer (got -1)");
  check_config_error(with(minimal(), "eos_token_id", "2"), "key 'eos_token_id' must be a non-negative integer");
  check_config_error(with(minimal(), "eot_token_id", 100000), "key 'eot_token_id' must be below embedding_size");
  check_config_error(with(minimal(), "eos_token_id", 99), "key 'mask_token_id' equals an end-of-text id, eos_token_id or eot_token_id (99)");
  // A mask id within the padded embedding rows but past vocab_size is allowed.
  CHECK(unmask::parse_config(with(with(minimal(), "embedding_size", 128), "mask_token_id", 120), kPath)
            .mask_token_id == 120);
}

TEST_CASE("config: unmask_defaults") {
  check_config_error(with(minimal(), "unmask_defaults", 5), "key 'unmask_defaults' must be an object");
  check_config_error(with(minimal(), "unmask_defaults", {{"gen_lenght", 5}}),
                     "key 'unmask_defaults.gen_lenght' is unknown");
  check_config_error(with(minimal(), "unmask_defaults", {{"steps", 0}}),
                     "key 'unmask_defaults.steps' must be a positive integer (got 0)");
  unmask::ModelConfig c =
      unmask::parse_config(with(minimal(), "unmask_defaults", {{"steps", 16}}), kPath);
  CHECK(c.defaults.steps == 16);
  CHECK(c.defaults.gen_length == 0);
}

TEST_CASE("config: load_config reads the file and names it") {
  std::random_device rd;
  auto dir = std::filesystem::temp_directory_path() /
             ("unmask_cfg_" + std::to_string(::getpid()) + "_" + std::to_string(rd()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "config.json").string();
  auto write = [&](const std::string& text) { std::ofstream(path) << text; };

  write(llada_8b().dump(2));
  CHECK(unmask::load_config(path).mask_token_id == 126336);
  CHECK(unmask::load_config(path).path == path);
  write("{\"d_model\": ");
  CHECK_THROWS_WITH_AS(unmask::load_config(path), doctest::Contains((path + ": not valid JSON").c_str()),
                       unmask::Error);
  write("");
  CHECK_THROWS_WITH_AS(unmask::load_config(path), doctest::Contains("not valid JSON"), unmask::Error);
  CHECK_THROWS_WITH_AS(unmask::load_config((dir / "absent.json").string()),
                       doctest::Contains("absent.json: cannot open"), unmask::Error);
  std::filesystem::remove_all(dir);
}

namespace {
// Dream-v0-7B's config.json keys, scaled down.
json dream_config() {
  return json{{"architectures", {"DreamModel"}}, {"model_type", "Dream"}, {"hidden_size", 56},
              {"intermediate_size", 96}, {"num_attention_heads", 7}, {"num_key_value_heads", 1},
              {"num_hidden_layers", 2}, {"vocab_size", 512}, {"rms_norm_eps", 1e-6},
              {"rope_theta", 1e6}, {"max_position_embeddings", 128}, {"tie_word_embeddings", false},
              {"hidden_act", "silu"}, {"use_sliding_window", false}, {"sliding_window", nullptr},
              {"rope_scaling", nullptr}, {"mask_token_id", 500}, {"eos_token_id", 497},
              {"bos_token_id", 497}, {"pad_token_id", 497}};
}
// A DiffuLLaMA-style LlamaForCausalLM config: no mask id.
json llama_config() {
  return json{{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", 48},
              {"intermediate_size", 80}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
              {"num_hidden_layers", 2}, {"vocab_size", 1000}, {"rms_norm_eps", 1e-5},
              {"max_position_embeddings", 128}, {"bos_token_id", 1}, {"eos_token_id", 2},
              {"attention_bias", false}, {"mlp_bias", false}};
}
}  // namespace

TEST_CASE("config: Dream (Qwen2 keys) and llama-format families") {
  const unmask::ModelConfig d = unmask::parse_config(dream_config(), kPath);
  CHECK(d.family == "dream");
  CHECK(d.d_model == 56);
  CHECK(d.n_heads == 7);
  CHECK(d.n_kv_heads == 1);
  CHECK(d.head_dim == 8);
  CHECK(d.mlp_hidden == 96);
  CHECK(d.embedding_size == 512);
  CHECK(d.rope_theta == 1e6);
  CHECK(d.rms_eps == 1e-6);
  CHECK(d.include_qkv_bias);
  CHECK(d.shifted_logits);
  CHECK_FALSE(d.weight_tying);
  CHECK(d.mask_token_id == 500);
  CHECK(d.stop_token_ids == std::vector<int32_t>{497});

  const unmask::ModelConfig l = unmask::parse_config(llama_config(), kPath);
  CHECK(l.family == "llama");
  CHECK(l.shifted_logits);
  CHECK_FALSE(l.include_qkv_bias);
  CHECK(l.mask_token_id == -1);  // resolved later from --mask-id or the tokenizer config
  CHECK(l.rope_theta == 10000.0);
  // Llama-3-style configs list several end ids; the first fills a finished answer's tail.
  const unmask::ModelConfig l3 = unmask::parse_config(with(llama_config(), "eos_token_id", {2, 7}), kPath);
  CHECK(l3.eos_token_id == 2);
  CHECK(l3.stop_token_ids == std::vector<int32_t>{2, 7});
  CHECK(unmask::parse_config(without(llama_config(), "model_type"), kPath).family == "llama");
}

TEST_CASE("config: Hugging Face-style switches unmask cannot honour are refused by name") {
  check_config_error(with(dream_config(), "hidden_act", "gelu"), "key 'hidden_act' is unsupported unless \"silu\"");
  check_config_error(with(dream_config(), "rope_scaling", {{"type", "yarn"}}), "key 'rope_scaling.type' is unsupported");
  check_config_error(with(dream_config(), "use_sliding_window", true), "key 'use_sliding_window' = true");
  check_config_error(with(llama_config(), "attention_bias", true), "key 'attention_bias' = true is unsupported");
  check_config_error(with(llama_config(), "mlp_bias", true), "key 'mlp_bias' = true");
  check_config_error(with(llama_config(), "head_dim", 16), "key 'head_dim' must equal hidden_size / num_attention_heads (12)");
  check_config_error(without(dream_config(), "hidden_size"), "missing required key 'hidden_size'");
  check_config_error(without(dream_config(), "mask_token_id"),
                     "key 'mask_token_id' is absent, and DreamConfig's default 151666 is not below vocab_size (512)");
  check_config_error(with(dream_config(), "num_attention_heads", 5),
                     "key 'num_attention_heads' (5) must divide hidden_size (56)");
  check_config_error(with(dream_config(), "num_key_value_heads", 2),
                     "key 'num_key_value_heads' (2) must divide num_attention_heads (7)");
  check_config_error(with(dream_config(), "mask_token_id", 512), "key 'mask_token_id' must be below vocab_size (512)");
  check_config_error(with(llama_config(), "eos_token_id", {2, 5000}), "key 'eos_token_id' must be below vocab_size");
}

TEST_CASE("config: RoPE in either layout; every scaled rope type refused in either place") {
  // transformers' newer layout.
  json j = without(dream_config(), "rope_theta");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 500000}};
  CHECK(unmask::parse_config(j, kPath).rope_theta == 500000.0);
  j = without(minimal(), "rope_theta");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 500000}};
  unmask::ModelConfig c = unmask::parse_config(j, kPath);
  CHECK(c.rope_theta == 500000.0);
  CHECK(std::find(c.assumed.begin(), c.assumed.end(), "rope_theta 10000") == c.assumed.end());
  // Both layouts agreeing is fine; disagreeing is an error, never a silent choice.
  CHECK(unmask::parse_config(with(j, "rope_theta", 500000.0), kPath).rope_theta == 500000.0);
  check_config_error(with(j, "rope_theta", 10000.0), "key 'rope_theta' contradicts rope_parameters.rope_theta");
  // A plain rope_type in rope_scaling is plain RoPE.
  CHECK(unmask::parse_config(with(dream_config(), "rope_scaling", {{"rope_type", "default"}}), kPath).rope_theta == 1e6);
  for (const char* type : {"yarn", "linear", "dynamic", "llama3", "longrope"}) {
    CAPTURE(type);
    check_config_error(with(dream_config(), "rope_parameters", {{"rope_type", type}, {"rope_theta", 1e6}}),
                       "key 'rope_parameters.rope_type' is unsupported (only plain RoPE");
    check_config_error(with(minimal(), "rope_parameters", {{"rope_type", type}}), "rope_parameters.rope_type");
    check_config_error(with(minimal(), "rope_scaling", {{"rope_type", type}, {"factor", 4.0}}),
                       "key 'rope_scaling.rope_type' is unsupported");
    check_config_error(with(llama_config(), "rope_scaling", {{"type", type}}), "key 'rope_scaling.type'");
  }
  check_config_error(with(dream_config(), "rope_parameters", {{"rope_type", "default"}, {"factor", 2.0}}),
                     "key 'rope_parameters.factor' is unsupported");
  check_config_error(with(dream_config(), "rope_scaling", {{"factor", 2.0}}), "key 'rope_scaling' is unsupported");
  check_config_error(with(dream_config(), "rope_parameters", 5), "key 'rope_parameters'");
}

TEST_CASE("config: absent keys take the family's configuration-class defaults, and say so") {
  // Dream: DreamConfig's rope_theta is 10000 (the 7B checkpoint writes 1e6), 32 KV heads when
  // the key is absent, 32768 positions, eps 1e-6.
  json j = without(without(without(dream_config(), "rope_theta"), "max_position_embeddings"), "rms_norm_eps");
  j = without(j, "num_key_value_heads");
  j["num_attention_heads"] = 32;
  j["hidden_size"] = 256;
  unmask::ModelConfig d = unmask::parse_config(j, kPath);
  CHECK(d.rope_theta == 10000.0);
  CHECK(d.n_kv_heads == 32);
  CHECK(d.max_seq_len == 32768);
  CHECK(d.rms_eps == doctest::Approx(1e-6));
  CHECK(d.assumed == std::vector<std::string>{"num_key_value_heads 32", "max_position_embeddings 32768",
                                              "rope_theta 10000", "rms_norm_eps 1e-06"});
  // null KV heads: as many as the query heads.
  CHECK(unmask::parse_config(with(j, "num_key_value_heads", nullptr), kPath).n_kv_heads == 32);
  CHECK(unmask::parse_config(with(with(j, "num_key_value_heads", nullptr), "num_attention_heads", 16), kPath)
            .n_kv_heads == 16);
  // Dream's mask id from its class when absent and it fits.
  json big = with(without(dream_config(), "mask_token_id"), "vocab_size", 152064);
  CHECK(unmask::parse_config(big, kPath).mask_token_id == 151666);
  // Llama: LlamaConfig's eps is 1e-6 and its context 2048.
  unmask::ModelConfig l = unmask::parse_config(without(without(llama_config(), "rms_norm_eps"), "max_position_embeddings"), kPath);
  CHECK(l.rms_eps == doctest::Approx(1e-6));
  CHECK(l.max_seq_len == 2048);
  CHECK(l.n_kv_heads == 2);
  // LLaDA switches whose class default unmask does not run are refused by name when absent.
  for (const char* key : {"rope", "block_type", "layer_norm_type", "activation_type"}) {
    CAPTURE(key);
    check_config_error(without(minimal(), key), (std::string("key '") + key +
                                                 "' is missing, which LLaDA's configuration class reads as").c_str());
  }
  CHECK(unmask::parse_config(without(minimal(), "alibi"), kPath).family == "llada");
}
