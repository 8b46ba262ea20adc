// LLaDA2 (block diffusion) and LLaDA-MoE: the settings' defaults and validation rules as
// resolve_settings and validate_settings apply them, and the config.json and tensor errors of the
// two MoE families (config_moe.cpp, weights.cpp).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "cli/options.h"
#include "common.h"
#include "decode/settings.h"
#include "fixtures.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "io/weights.h"

using namespace unmask;
using nlohmann::json;
using unmask::test::fixture;
using unmask::test::load_json;
namespace fs = std::filesystem;

namespace {

const ModelConfig& llada2() {
  static const ModelConfig c = load_config(fixture("tiny-llada2") + "/config.json");
  return c;
}
const ModelConfig& llada_moe() {
  static const ModelConfig c = load_config(fixture("tiny-llada-moe") + "/config.json");
  return c;
}
const ModelConfig& llada() {
  static const ModelConfig c = load_config(fixture("tiny-f32-gqa") + "/config.json");
  return c;
}
const ModelConfig& dream() {
  static const ModelConfig c = load_config(fixture("tiny-dream") + "/config.json");
  return c;
}

// resolve_settings then validate_settings, as every input path runs them (5 prompt tokens).
GenerationSettings resolve_and_check(const GenerationOptions& o, const ModelConfig& config,
                                     SettingNames names = SettingNames::Options) {
  GenerationSettings s = resolve_settings(o, config, names);
  validate_settings(s, 5, config, names);
  return s;
}

// The options are refused as a usage error whose message holds `phrase`.
void check_refused(const GenerationOptions& o, const ModelConfig& config, const std::string& phrase,
                   SettingNames names = SettingNames::Options) {
  CAPTURE(phrase);
  try {
    resolve_and_check(o, config, names);
    FAIL("accepted; expected an error saying: " << phrase);
  } catch (const Error& e) {
    CHECK(e.exit_code() == kExitUsage);
    CHECK_MESSAGE(std::string(e.what()).find(phrase) != std::string::npos, e.what());
  }
}

GenerationOptions with(std::function<void(GenerationOptions&)> edit) {
  GenerationOptions o;
  edit(o);
  return o;
}

// tiny-llada2's config.json, to edit key by key.
json llada2_json() { return load_json(fixture("tiny-llada2") + "/config.json"); }
json llada_moe_json() { return load_json(fixture("tiny-llada-moe") + "/config.json"); }

const char* kPath = "models/x/config.json";

void check_config_error(const json& j, const std::string& phrase) {
  CAPTURE(phrase);
  try {
    parse_config(j, kPath);
    FAIL("config accepted; expected an error saying: " << phrase);
  } catch (const Error& e) {
    CHECK(e.exit_code() == kExitBadInput);
    const std::string what = e.what();
    CHECK(what.rfind(std::string(kPath) + ": ", 0) == 0);
    CHECK_MESSAGE(what.find(phrase) != std::string::npos, what);
  }
}

json edited(json j, const std::string& key, const json& value) {
  j[key] = value;
  return j;
}
json erased(json j, const std::string& key) {
  j.erase(key);
  return j;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A copy of a fixture model whose model.safetensors lacks the tensor `drop` (its bytes stay in
// the data section, unreferenced).
struct ModelWithout {
  unmask::test::TempDir dir{"unmask_llada2_weights"};
  ModelWithout(const std::string& model, const std::string& drop) {
    for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"})
      fs::copy_file(fixture(model) + "/" + f, dir / f);
    const std::string file = slurp(fixture(model) + "/model.safetensors");
    uint64_t n = 0;
    std::memcpy(&n, file.data(), 8);  // note: little-endian host
    json header = json::parse(file.substr(8, n));
    REQUIRE(header.erase(drop) == 1);
    std::string text = header.dump();
    while (text.size() % 8) text += ' ';
    std::string out(8, '\0');
    const uint64_t len = text.size();
    std::memcpy(out.data(), &len, 8);
    std::ofstream(dir / "model.safetensors", std::ios::binary) << out << text << file.substr(8 + n);
  }
};

void check_missing_tensor(const std::string& model, const std::string& tensor) {
  CAPTURE(tensor);
  ModelWithout m(model, tensor);
  const ModelConfig cfg = load_config(m.dir / "config.json");
  const TensorStore store = TensorStore::open_dir(m.dir.path.string());
  try {
    bind_weights(store, cfg);
    FAIL("bound without " << tensor);
  } catch (const Error& e) {
    CHECK(e.exit_code() == kExitBadInput);
    CHECK_MESSAGE(std::string(e.what()).find("tensor '" + tensor + "' is missing") != std::string::npos, e.what());
  }
}

}  // namespace

TEST_CASE("llada2 settings: a block-diffusion model defaults to its loop, the block cache and its threshold") {
  const GenerationSettings s = resolve_and_check({}, llada2());
  CHECK(s.alg == Algorithm::Llada2);
  CHECK(s.cache == CacheMode::Block);
  REQUIRE(s.threshold.has_value());
  CHECK(*s.threshold == kLlada2Threshold);
  CHECK(*s.threshold == 0.95f);
  CHECK(s.block_length == 32);
  CHECK(s.steps == 32);  // LLaDA2's steps are per block: the block length
  CHECK(s.gen_length == 128);
  CHECK_FALSE(s.editing_threshold.has_value());  // LLaDA2.0's loop: no editing
  CHECK(s.max_post_steps == kLlada2MaxPostSteps);

  // Any gen length fits any block length (the canvas is padded to whole blocks): no note, no
  // change of the block length, the steps still per block.
  GenerationOptions o;
  o.gen_length = 50;
  std::vector<std::string> notes;
  const GenerationSettings odd = resolve_settings(o, llada2(), SettingNames::Options, &notes);
  CHECK(odd.block_length == 32);
  CHECK(odd.steps == 32);
  CHECK(odd.gen_length == 50);
  CHECK(notes.empty());
  CHECK_NOTHROW(validate_settings(odd, 5, llada2()));
  // The same gen length on LLaDA's block loop cannot keep blocks of 32 (its contrast).
  CHECK(resolve_settings(o, llada()).block_length == 50);

  // Explicit values win; --steps greater than the block length is allowed (trailing zero counts).
  o.block_length = 8;
  o.steps = 16;
  const GenerationSettings given = resolve_and_check(o, llada2());
  CHECK(given.block_length == 8);
  CHECK(given.steps == 16);
  o.steps.reset();
  CHECK(resolve_and_check(o, llada2()).steps == 8);
  // --cache none is LLaDA2's other choice.
  CHECK(resolve_and_check(with([](auto& g) { g.cache = "none"; }), llada2()).cache == CacheMode::None);

  // LLaDA-MoE is bidirectional: LLaDA's block loop, no cache, no threshold.
  const GenerationSettings moe = resolve_and_check({}, llada_moe());
  CHECK(moe.alg == Algorithm::Llada);
  CHECK(moe.cache == CacheMode::None);
  CHECK_FALSE(moe.threshold.has_value());
  CHECK(moe.steps == moe.gen_length);
}

TEST_CASE("llada2 settings: the editing presets set both thresholds; explicit options win") {
  const GenerationSettings speed = resolve_and_check(with([](auto& g) { g.editing_preset = "speed"; }), llada2());
  REQUIRE(speed.threshold.has_value());
  REQUIRE(speed.editing_threshold.has_value());
  CHECK(*speed.threshold == 0.5f);
  CHECK(*speed.editing_threshold == 0.f);
  CHECK(speed.max_post_steps == kLlada2MaxPostSteps);

  const GenerationSettings quality = resolve_and_check(with([](auto& g) { g.editing_preset = "quality"; }), llada2());
  CHECK(*quality.threshold == 0.7f);
  CHECK(*quality.editing_threshold == 0.5f);

  const GenerationSettings mixed = resolve_and_check(with([](auto& g) {
                                                       g.editing_preset = "speed";
                                                       g.threshold = 0.8f;
                                                       g.editing_threshold = 0.3f;
                                                       g.max_post_steps = 4;
                                                     }),
                                                     llada2());
  CHECK(*mixed.threshold == 0.8f);
  CHECK(*mixed.editing_threshold == 0.3f);
  CHECK(mixed.max_post_steps == 4);
  // One explicit threshold: the other from the preset.
  const GenerationSettings half = resolve_and_check(with([](auto& g) {
                                                      g.editing_preset = "quality";
                                                      g.threshold = 0.9f;
                                                    }),
                                                    llada2());
  CHECK(*half.threshold == 0.9f);
  CHECK(*half.editing_threshold == 0.5f);
  // The preset gives the editing threshold --max-post-steps needs.
  CHECK(resolve_and_check(with([](auto& g) {
                            g.editing_preset = "speed";
                            g.max_post_steps = 0;
                          }),
                          llada2())
            .max_post_steps == 0);
  // An editing threshold alone: LLaDA2.1's loop with LLaDA2's threshold.
  const GenerationSettings alone = resolve_and_check(with([](auto& g) { g.editing_threshold = 0.9f; }), llada2());
  CHECK(*alone.threshold == 0.95f);
  CHECK(*alone.editing_threshold == 0.9f);
  // The ends of [0, 1] are allowed.
  CHECK_NOTHROW(resolve_and_check(with([](auto& g) { g.editing_threshold = 0.f; }), llada2()));
  CHECK_NOTHROW(resolve_and_check(with([](auto& g) { g.editing_threshold = 1.f; }), llada2()));
}

TEST_CASE("llada2 settings: the loop and the model must match") {
  check_refused(with([](auto& g) { g.alg = "llada"; }), llada2(),
                "--alg llada does not fit this block-diffusion model (llada2): it runs --alg llada2");
  check_refused(with([](auto& g) { g.alg = "entropy"; }), llada2(), "--alg entropy does not fit this block-diffusion model");
  check_refused(with([](auto& g) { g.alg = "llada2"; }), llada(),
                "--alg llada2 is LLaDA2's loop for block-diffusion models; this llada model");
  check_refused(with([](auto& g) { g.alg = "llada2"; }), llada_moe(),
                "--alg llada2 is LLaDA2's loop for block-diffusion models; this llada_moe model");
  check_refused(with([](auto& g) { g.alg = "llada2"; }), dream(), "--alg llada2 is LLaDA2's loop");
  // The same rule, named as a batch line or a server request names it.
  check_refused(with([](auto& g) { g.alg = "llada"; }), llada2(), "'alg' llada does not fit", SettingNames::JsonKeys);
  check_refused(with([](auto& g) { g.alg = "llada2"; }), llada_moe(), "'alg' llada2 is LLaDA2's loop",
                SettingNames::JsonKeys);
}

TEST_CASE("llada2 settings: caches, guidance, factor, random remasking and --eos-last are refused on LLaDA2's loop") {
  check_refused(with([](auto& g) { g.cache = "prefix"; }), llada2(), "--cache prefix does not apply to LLaDA2's loop");
  check_refused(with([](auto& g) { g.cache = "dual"; }), llada2(), "--cache dual does not apply to LLaDA2's loop");
  check_refused(with([](auto& g) { g.cache = "dual"; }), llada2(), "'cache' dual does not apply", SettingNames::JsonKeys);
  check_refused(with([](auto& g) { g.cache = "block"; }), llada(), "--cache block is exact only for block-diffusion models");
  check_refused(with([](auto& g) { g.cache = "block"; }), llada_moe(), "--cache block is exact only for block-diffusion models");
  check_refused(with([](auto& g) { g.cache = "block"; }), llada_moe(), "'cache' block is exact only",
                SettingNames::JsonKeys);
  check_refused(with([](auto& g) { g.cache = "sideways"; }), llada2(), "--cache: unknown mode 'sideways'");
  check_refused(with([](auto& g) { g.cfg_scale = 1.5f; }), llada2(), "--cfg-scale does not apply to LLaDA2's loop");
  check_refused(with([](auto& g) { g.cfg_scale = 1.5f; }), llada2(), "'cfg_scale' does not apply", SettingNames::JsonKeys);
  check_refused(with([](auto& g) { g.factor = 1.f; }), llada2(), "--factor does not apply to LLaDA2's loop");
  check_refused(with([](auto& g) { g.remasking = "random"; }), llada2(), "--remasking random does not apply to LLaDA2's loop");
  check_refused(with([](auto& g) { g.eos_last = true; }), llada2(), "--eos-last does not apply to LLaDA2's loop");
  check_refused(with([](auto& g) { g.alg_temp = 0.5f; }), llada2(), "--alg-temp does not apply to LLaDA2's loop");
  // Their neutral values are fine.
  CHECK_NOTHROW(resolve_and_check(with([](auto& g) {
                                    g.cfg_scale = 0.f;
                                    g.remasking = "low_confidence";
                                  }),
                                  llada2()));
}

TEST_CASE("llada2 settings: editing threshold, post steps and presets are checked") {
  for (float bad : {1.5f, -0.1f, std::nanf(""), std::numeric_limits<float>::infinity()}) {
    CAPTURE(bad);
    check_refused(with([bad](auto& g) { g.editing_threshold = bad; }), llada2(),
                  "--editing-threshold must be a finite number in [0, 1]");
    check_refused(with([bad](auto& g) { g.editing_threshold = bad; }), llada2(),
                  "'editing_threshold' must be a finite number in [0, 1]", SettingNames::JsonKeys);
  }
  check_refused(with([](auto& g) { g.editing_threshold = 0.5f; }), llada(), "--editing-threshold applies to --alg llada2 only");
  check_refused(with([](auto& g) { g.editing_threshold = 0.5f; }), llada_moe(),
                "'editing_threshold' applies to 'alg' llada2 only", SettingNames::JsonKeys);
  check_refused(with([](auto& g) { g.max_post_steps = 4; }), llada2(),
                "--max-post-steps applies to LLaDA2.1's editing loop: give --editing-threshold too");
  check_refused(with([](auto& g) { g.max_post_steps = 4; }), llada2(),
                "'max_post_steps' applies to LLaDA2.1's editing loop: give 'editing_threshold' too",
                SettingNames::JsonKeys);
  // Only a JSON value can be negative (the option is bounded): the value check names the key.
  check_refused(with([](auto& g) {
                  g.editing_threshold = 0.5f;
                  g.max_post_steps = -1;
                }),
                llada2(), "'max_post_steps' must be in [0, 1048576]", SettingNames::JsonKeys);
  check_refused(with([](auto& g) { g.editing_preset = "speed"; }), llada(), "--editing-preset applies to --alg llada2");
  check_refused(with([](auto& g) { g.editing_preset = "quality"; }), llada_moe(), "--editing-preset applies to --alg llada2");
  check_refused(with([](auto& g) {
                  g.editing_preset = "speed";
                  g.alg = "llada";
                }),
                llada2(), "--editing-preset applies to --alg llada2");
  // Named as a batch line or a server request names it.
  check_refused(with([](auto& g) { g.editing_preset = "speed"; }), llada_moe(), "'editing_preset' applies to 'alg' llada2",
                SettingNames::JsonKeys);
}

TEST_CASE("llada2 config: MoE keys missing or inconsistent are refused by name") {
  REQUIRE_NOTHROW(parse_config(llada2_json(), kPath));
  check_config_error(erased(llada2_json(), "num_experts"), "missing required key 'num_experts'");
  check_config_error(erased(llada2_json(), "n_group"), "missing required key 'n_group'");
  check_config_error(erased(llada2_json(), "topk_group"), "missing required key 'topk_group'");
  check_config_error(erased(llada2_json(), "num_experts_per_tok"), "missing required key 'num_experts_per_tok'");
  check_config_error(erased(llada2_json(), "moe_intermediate_size"), "missing required key 'moe_intermediate_size'");
  // 8 experts: 3 groups do not divide them, 8 groups would hold one expert each.
  check_config_error(edited(llada2_json(), "n_group", 3), "key 'n_group' must divide num_experts into groups of at least 2");
  check_config_error(edited(llada2_json(), "n_group", 8), "key 'n_group' must divide num_experts into groups of at least 2");
  CHECK(parse_config(edited(edited(llada2_json(), "n_group", 1), "topk_group", 1), kPath).moe.n_group == 1);
  check_config_error(edited(llada2_json(), "topk_group", 5), "key 'topk_group' must not exceed n_group");
  // 1 group of 2 experts kept, 3 experts asked for.
  check_config_error(edited(edited(llada2_json(), "topk_group", 1), "num_experts_per_tok", 3),
                     "key 'topk_group' keeps fewer experts than num_experts_per_tok");
  check_config_error(edited(llada2_json(), "num_experts_per_tok", 9), "key 'num_experts_per_tok' must not exceed num_experts (8)");
  check_config_error(edited(llada2_json(), "num_experts", 0), "key 'num_experts' must be a positive integer");
  // use_bias: true is a bias the forward pass lacks; absent, the published classes disagree.
  check_config_error(edited(llada2_json(), "use_bias", true), "key 'use_bias' = true is unsupported");
  check_config_error(erased(llada2_json(), "use_bias"), "key 'use_bias' is missing");
  // head_dim 24: factor 0.125 gives 3 rotary dims, odd.
  check_config_error(edited(llada2_json(), "partial_rotary_factor", 0.125),
                     "key 'partial_rotary_factor' gives a rotary dimension of 3");
  check_config_error(edited(llada2_json(), "partial_rotary_factor", 1.5), "key 'partial_rotary_factor' must be a number in (0, 1]");
  check_config_error(edited(llada2_json(), "partial_rotary_factor", 0), "key 'partial_rotary_factor' must be a number in (0, 1]");
  CHECK(parse_config(edited(llada2_json(), "partial_rotary_factor", 0.25), kPath).rotary_dim == 6);
  check_config_error(edited(llada2_json(), "hidden_act", "gelu"), "key 'hidden_act' is unsupported unless \"silu\"");
  // The keys the HF code ignores change nothing.
  const ModelConfig ignored = parse_config(edited(edited(edited(llada2_json(), "score_function", "softmax"),
                                                         "norm_topk_prob", false),
                                                  "rotary_dim", 24),
                                           kPath);
  CHECK(ignored.moe.sigmoid_scores);
  CHECK(ignored.moe.renormalize);
  CHECK(ignored.rotary_dim == 12);
}

TEST_CASE("llada-moe config: detected by its architecture, moe_layer_freq checked") {
  // Its published config says model_type "llada", LLaDA's: the architecture decides.
  json j = llada_moe_json();
  REQUIRE(j["model_type"] == "llada");
  const ModelConfig c = parse_config(j, kPath);
  CHECK(c.family == "llada_moe");
  CHECK_FALSE(c.block_causal);
  CHECK(parse_config(edited(j, "model_type", "lladamoe"), kPath).family == "llada_moe");
  // Without the architecture, model_type "llada" is LLaDA's (whose keys this config lacks).
  CHECK_THROWS_AS(parse_config(erased(j, "architectures"), kPath), Error);

  check_config_error(edited(j, "moe_layer_freq", json::array({0, 1})),
                     "key 'moe_layer_freq' must be 1 or a list of num_hidden_layers (3) entries");
  check_config_error(edited(j, "moe_layer_freq", json::array({0, 1, 1, 1})),
                     "key 'moe_layer_freq' must be 1 or a list of num_hidden_layers (3) entries");
  check_config_error(edited(j, "moe_layer_freq", json::array({0, -1, 1})), "key 'moe_layer_freq' must hold non-negative integers");
  check_config_error(edited(j, "moe_layer_freq", 2), "key 'moe_layer_freq' must be 1 or a list");
  CHECK(parse_config(edited(j, "moe_layer_freq", 1), kPath).moe.layer_is_moe == std::vector<bool>{true, true, true});
  check_config_error(erased(j, "dense_intermediate_size"), "key 'dense_intermediate_size' is missing");
  check_config_error(erased(j, "num_experts"), "missing required key 'num_experts'");
  check_config_error(edited(j, "num_experts_per_tok", 9), "key 'num_experts_per_tok' must not exceed num_experts (8)");
  check_config_error(edited(j, "attention_bias", true), "key 'attention_bias' = true is unsupported");
  // head_dim 12 (48 / 4): factor 0.25 gives 3 rotary dims.
  check_config_error(edited(j, "partial_rotary_factor", 0.25), "key 'partial_rotary_factor' gives a rotary dimension of 3");
}

TEST_CASE("llada2 weights: a missing expert tensor is named") {
  check_missing_tensor("tiny-llada2", "model.layers.1.mlp.experts.3.up_proj.weight");
  check_missing_tensor("tiny-llada2", "model.layers.2.mlp.gate.expert_bias");
  check_missing_tensor("tiny-llada2", "model.layers.2.mlp.shared_experts.down_proj.weight");
  check_missing_tensor("tiny-llada-moe", "model.layers.2.mlp.experts.7.down_proj.weight");
  check_missing_tensor("tiny-llada-moe", "model.layers.1.shared_expert.gate_proj.weight");
}
