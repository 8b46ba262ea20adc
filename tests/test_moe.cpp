// LLaDA2 (block diffusion, MoE) and LLaDA-MoE checkpoints against scripts/reference_moe.py:
// forward rows (and the classic mistakes they rule out), chat rendering, both LLaDA2 loops with
// and without the exact block KV cache, alone and batched.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>

#include "decode/engine.h"
#include "decode/session.h"
#include "fixtures.h"
#include "tokenizer/chat.h"

using namespace unmask;
using unmask::test::fixture;
using unmask::test::load_json;

namespace {

const nlohmann::json& moe() {
  static const nlohmann::json j = load_json(fixture("moe.json"));
  return j;
}

Session& session_of(const std::string& model) {
  static std::map<std::string, std::unique_ptr<Session>> sessions;
  auto& s = sessions[model];
  if (!s) s = open_session(fixture(model), "cpu", 0);
  return *s;
}

GenerationSettings settings_of(const nlohmann::json& c) {
  GenerationSettings s;
  s.alg = c["loop"] == "llada2" ? Algorithm::Llada2 : Algorithm::Llada;
  s.gen_length = c["gen_length"].get<int>();
  s.steps = c["steps"].get<int>();
  s.block_length = c["block_length"].get<int>();
  if (!c.value("threshold", nlohmann::json()).is_null()) s.threshold = c["threshold"].get<float>();
  if (!c.value("editing_threshold", nlohmann::json()).is_null())
    s.editing_threshold = c["editing_threshold"].get<float>();
  if (!c.value("max_post_steps", nlohmann::json()).is_null()) s.max_post_steps = c["max_post_steps"].get<int>();
  s.temperature = c["temperature"].get<float>();
  s.top_k = c["top_k"].get<int>();
  s.top_p = c["top_p"].get<float>();
  s.seed = c["seed"].get<uint64_t>();
  s.eos_stop = c.value("eos_early_stop", nlohmann::json(false)).get<bool>();
  s.cache = s.alg == Algorithm::Llada2 ? CacheMode::Block : CacheMode::None;
  return s;
}

// The answer cut after its first EOS (inclusive), as the references return it.
std::vector<int32_t> cut_after_eos(std::vector<int32_t> ids, int32_t eos) {
  auto it = std::find(ids.begin(), ids.end(), eos);
  if (it != ids.end()) ids.erase(it + 1, ids.end());
  return ids;
}

std::vector<float> forward_rows(Session& session, const nlohmann::json& c, size_t r) {
  ForwardBatch batch;
  batch.clear();
  batch.add_sequence(c["tokens"].get<std::vector<int32_t>>());
  batch.out_rows = c["rows"].get<std::vector<int32_t>>();
  if (!c["block_length"].is_null()) batch.block_size = c["block_length"].get<int32_t>();
  Tensor logits = session.model->forward(batch);
  return std::vector<float>(logits.f32() + r * logits.cols, logits.f32() + (r + 1) * logits.cols);
}

}  // namespace

TEST_CASE("moe: both checkpoints load with the facts of their family") {
  const ModelConfig& l2 = session_of("tiny-llada2").config;
  CHECK(l2.family == "llada2");
  CHECK(l2.block_causal);
  CHECK(l2.head_dim == 24);  // from head_dim, not hidden_size / heads
  CHECK(l2.rotary_dim == moe()["models"]["tiny-llada2"]["rotary_dim"].get<int64_t>());
  CHECK(l2.qk_norm);
  CHECK(l2.moe.n_experts == 8);
  CHECK(l2.moe.top_k == 2);
  CHECK(l2.moe.n_group == 4);
  CHECK(l2.moe.topk_group == 2);
  CHECK(l2.moe.sigmoid_scores);
  CHECK(l2.moe.renormalize);
  CHECK_FALSE(l2.moe.bias_in_weights);
  CHECK(l2.moe.routed_scale == doctest::Approx(2.5));
  CHECK(l2.moe.shared_hidden == 32);
  CHECK(l2.moe.layer_is_moe == std::vector<bool>{false, true, true});
  CHECK(l2.mask_token_id == moe()["models"]["tiny-llada2"]["mask_id"].get<int32_t>());

  const ModelConfig& lm = session_of("tiny-llada-moe").config;
  CHECK(lm.family == "llada_moe");  // its config says model_type "llada"
  CHECK_FALSE(lm.block_causal);
  CHECK(lm.rotary_dim == lm.head_dim);
  CHECK_FALSE(lm.moe.sigmoid_scores);
  CHECK(lm.moe.bias_in_weights);
  CHECK_FALSE(lm.moe.renormalize);  // norm_topk_prob true is ignored, as the code ignores it
  CHECK(lm.moe.n_group == 1);
  CHECK(lm.moe.layer_is_moe == std::vector<bool>{false, true, true});
}

TEST_CASE("moe: forward rows match the float64 reference and rule out the classic mistakes") {
  for (const auto& c : moe()["forward"]) {
    const std::string model = c["model"].get<std::string>();
    CAPTURE(model);
    const std::string block_length = c["block_length"].dump();
    CAPTURE(block_length);
    Session& session = session_of(model);
    for (size_t r = 0; r < c["rows"].size(); r++) {
      CAPTURE(r);
      const std::vector<float> got = forward_rows(session, c, r);
      CHECK(unmask::test::relative_error(got, c["logits"][r].get<std::vector<double>>()) <= 1e-4);
      // Each mutant is the reference with one classic mistake (full RoPE, qk-norm after RoPE,
      // softmax routing, biased weights, no group limit, bidirectional attention, ...): the
      // rows must be far from every one of them.
      const nlohmann::json mutants = c.value("mutants", nlohmann::json::object());
      for (auto it = mutants.begin(); it != mutants.end(); ++it) {
        const std::string mistake = it.key();
        const nlohmann::json& logits = it.value();
        CAPTURE(mistake);
        CHECK(unmask::test::relative_error(got, logits[r].get<std::vector<double>>()) > 1e-2);
      }
    }
  }
}

TEST_CASE("moe: LLaDA2's chat template renders as the published Jinja one") {
  for (const auto& c : moe()["chat"]) {
    const std::string model = c["model"].get<std::string>();
    const ChatTemplate chat = detect_chat_template(load_tokenizer_config(fixture(model)));
    std::optional<std::string> system;
    if (!c["system"].is_null()) system = c["system"].get<std::string>();
    CHECK(render_chat(chat, {{"user", c["user"].get<std::string>()}}, system) ==
          c["chat_text"].get<std::string>());
  }
}

TEST_CASE("moe: generation matches the reference token for token, with and without the block cache") {
  for (const auto& c : moe()["generate"]) {
    const std::string name = c["name"].get<std::string>();
    CAPTURE(name);
    Session& session = session_of(c["model"].get<std::string>());
    const auto prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    GenerationSettings s = settings_of(c);
    for (CacheMode cache : {CacheMode::None, s.cache}) {
      const std::string cache_name = cache_mode_name(cache);
      CAPTURE(cache_name);
      s.cache = cache;
      Sampler sampler(prompt, s, session.config);
      Engine engine(*session.model);
      engine.run({&sampler});
      REQUIRE(sampler.error().empty());
      const auto answer = sampler.answer();
      CHECK(cut_after_eos(answer, session.config.eos_token_id) == c["expected_ids"].get<std::vector<int32_t>>());
      if (!s.eos_stop) CHECK(answer == c["expected_raw_ids"].get<std::vector<int32_t>>());
      CHECK(sampler.steps_done() == c["forwards"].get<int>());
      if (c.contains("edits")) CHECK(sampler.edits() == c["edits"].get<int>());
    }
  }
}

TEST_CASE("moe: a ragged batch of LLaDA2 requests with different block lengths gives each one's ids") {
  Session& session = session_of("tiny-llada2");
  std::vector<std::unique_ptr<Sampler>> samplers;
  std::vector<Sampler*> batch;
  std::vector<const nlohmann::json*> cases;
  for (const auto& c : moe()["generate"]) {
    if (c["model"] != "tiny-llada2") continue;
    samplers.push_back(std::make_unique<Sampler>(c["prompt_ids"].get<std::vector<int32_t>>(), settings_of(c),
                                                 session.config));
    batch.push_back(samplers.back().get());
    cases.push_back(&c);
  }
  REQUIRE(batch.size() > 4);
  Engine engine(*session.model);
  engine.run(batch);
  for (size_t i = 0; i < batch.size(); i++) {
    const std::string name = (*cases[i])["name"].get<std::string>();
    CAPTURE(name);
    CHECK(cut_after_eos(batch[i]->answer(), session.config.eos_token_id) ==
          (*cases[i])["expected_ids"].get<std::vector<int32_t>>());
  }
}

TEST_CASE("moe: LLaDA2.1's loop ends a request the mask token stalls with an error, not a hang") {
  for (const auto& c : moe()["non_terminating"]) {
    const std::string name = c["name"].get<std::string>();
    CAPTURE(name);
    Session& session = session_of(c["model"].get<std::string>());
    GenerationSettings s;
    s.alg = Algorithm::Llada2;
    s.gen_length = c["gen_length"].get<int>();
    s.steps = c["steps"].get<int>();
    s.block_length = c["block_length"].get<int>();
    s.threshold = c["threshold"].get<float>();
    s.editing_threshold = c["editing_threshold"].get<float>();
    s.max_post_steps = c["max_post_steps"].get<int>();
    s.eos_stop = false;
    Sampler sampler(c["prompt_ids"].get<std::vector<int32_t>>(), s, session.config);
    Engine engine(*session.model);
    engine.run({&sampler});
    CHECK(sampler.error().find("mask token") != std::string::npos);
    CHECK(sampler.steps_done() == c["stall_forwards"].get<int>());
  }
}
