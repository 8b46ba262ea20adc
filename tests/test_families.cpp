// Dream (Qwen2 names, shifted logits), llama-format and BPE-tokenized LLaDA checkpoints against
// scripts/reference_families.py: forward rows, chat rendering, and whole generations in both loops.
#include <doctest/doctest.h>

#include "decode/engine.h"
#include "decode/session.h"
#include "fixture_cases.h"
#include "fixtures.h"
#include "tokenizer/chat.h"

using namespace unmask;
using unmask::test::fixture;
using unmask::test::load_json;

namespace {

const nlohmann::json& families() {
  static const nlohmann::json j = load_json(fixture("families.json"));
  return j;
}

// tiny-llama stores no mask id, as DiffuLLaMA; the fixtures use its 811.
std::unique_ptr<Session> open_fixture(const std::string& model) {
  const auto& info = families()["models"][model];
  std::optional<int32_t> mask;
  if (model == "tiny-llama") mask = info["mask_id"].get<int32_t>();
  return open_session(fixture(model), "cpu", 0, mask);
}

}  // namespace

TEST_CASE("families: each fixture checkpoint loads with the facts of its family") {
  for (const auto& [model, info] : families()["models"].items()) {
    CAPTURE(model);
    auto session = open_fixture(model);
    const ModelConfig& c = session->config;
    CHECK(c.family == (model == "tiny-dream" ? "dream" : model == "tiny-llama" ? "llama" : "llada"));
    CHECK(c.shifted_logits == info["loop_logits_shifted"].get<bool>());
    CHECK(c.mask_token_id == info["mask_id"].get<int32_t>());
    CHECK(c.eos_token_id == info["eos_token_id"].get<int32_t>());
    // The end-of-turn ids come from the tokenizer: <|im_end|> (Dream), <|eot_id|> (LLaDA).
    auto stops = c.stop_token_ids;
    std::sort(stops.begin(), stops.end());
    CHECK(stops == info["stop_ids"].get<std::vector<int32_t>>());
    CHECK(c.embedding_size == info["vocab_size"].get<int64_t>());
    CHECK(session->tokenizer->vocab_size() == info["tokenizer_size"].get<int32_t>());
  }
}

TEST_CASE("families: raw forward rows match the float64 reference") {
  for (const auto& c : families()["forward"]) {
    const std::string model = c["model"].get<std::string>();
    CAPTURE(model);
    auto session = open_fixture(model);
    ForwardBatch batch;
    batch.clear();
    batch.add_sequence(c["tokens"].get<std::vector<int32_t>>());
    batch.out_rows = c["rows"].get<std::vector<int32_t>>();
    Tensor logits = session->model->forward(batch);
    REQUIRE(logits.rows == static_cast<int64_t>(batch.out_rows.size()));
    for (size_t r = 0; r < batch.out_rows.size(); r++) {
      CAPTURE(r);
      std::vector<float> got(logits.f32() + r * logits.cols, logits.f32() + (r + 1) * logits.cols);
      const auto want = c["logits"][r].get<std::vector<double>>();
      REQUIRE(got.size() == want.size());
      // bf16 weights are exact in float32; the activations are float32 against float64.
      CHECK(unmask::test::relative_error(got, want) <= 1e-4);
    }
  }
}

TEST_CASE("families: the native chat templates render as the published Jinja ones") {
  for (const auto& c : families()["chat"]) {
    const std::string model = c["model"].get<std::string>();
    CAPTURE(model);
    const ChatTemplate chat = detect_chat_template(load_tokenizer_config(fixture(model)));
    std::optional<std::string> system;
    if (!c["system"].is_null()) system = c["system"].get<std::string>();
    CHECK(render_chat(chat, {{"user", c["user"].get<std::string>()}}, system) ==
          c["chat_text"].get<std::string>());
  }
}

TEST_CASE("families: generation matches the reference token for token (both loops)") {
  std::map<std::string, std::unique_ptr<Session>> sessions;
  for (const auto& c : families()["generate"]) {
    const std::string model = c["model"].get<std::string>();
    CAPTURE(c["name"].get<std::string>());
    auto& session = sessions[model];
    if (!session) session = open_fixture(model);

    // The prompt as the CLI builds it: plain (with the tokenizer's BOS for LLaDA) or chat.
    const bool chat = !c["chat"].is_null();
    std::optional<std::string> system;
    if (chat && !c["chat"]["system"].is_null()) system = c["chat"]["system"].get<std::string>();
    const std::string text = chat ? c["chat"]["user"].get<std::string>() : c["prompt_text"].get<std::string>();
    const std::vector<int32_t> prompt = encode_prompt(*session, text, chat, system);
    REQUIRE(prompt == c["prompt_ids"].get<std::vector<int32_t>>());

    const GenerationSettings s = unmask::test::family_settings_of(c);
    Sampler sampler(prompt, s, session->config);
    Engine engine(*session->model);
    engine.run({&sampler});
    CHECK(sampler.answer() == c["expected_ids"].get<std::vector<int32_t>>());
    CHECK(sampler.forwards() == c["forwards"].get<int>());
    CHECK(decode_text(*session->tokenizer, sampler.answer(), session->config.stop_token_ids, true) ==
          c["expected_text"].get<std::string>());
    // Masks written in the prompt (<|mask|>, <|mdm_mask|>) are filled as the references fill them.
    CHECK(sampler.filled_prompt() ==
          c.value("expected_filled_prompt_ids", c["prompt_ids"]).get<std::vector<int32_t>>());
  }
}

TEST_CASE("families: the live view shows byte-level BPE tokens as text, not as byte letters") {
  auto session = open_fixture("tiny-dream");
  const std::string text = "And God saw the light, that it was good.";
  const std::vector<int32_t> ids = session->tokenizer->encode(text);
  std::string shown;
  for (int32_t id : ids) shown += session->tokenizer->display_text(id);
  CHECK(shown == text);
  CHECK(session->tokenizer->piece(ids[1]).find("\xc4\xa0") == 0);  // the raw piece spells the space as U+0120
}

TEST_CASE("families: KV caches on a shifted-logit model recompute from one position before the block") {
  auto session = open_fixture("tiny-dream");
  const std::vector<int32_t> prompt = session->tokenizer->encode("In the beginning");
  GenerationSettings s;
  s.alg = Algorithm::Llada;
  s.gen_length = 16;
  s.block_length = 8;
  s.steps = 16;
  s.eos_stop = false;
  for (CacheMode mode : {CacheMode::Prefix, CacheMode::Dual}) {
    CAPTURE(cache_mode_name(mode));
    s.cache = mode;
    Sampler sampler(prompt, s, session->config);
    Engine engine(*session->model);
    // After the refresh step the recomputed range starts at the position whose hidden state
    // predicts the block's first token.
    engine.step({&sampler});
    const auto [first, last] = sampler.active_range();
    CHECK(first == static_cast<int32_t>(prompt.size()) - 1);
    CHECK(last == (mode == CacheMode::Dual ? static_cast<int32_t>(prompt.size()) + 8
                                           : static_cast<int32_t>(sampler.canvas().size())));
    engine.run({&sampler});
    const auto answer = sampler.answer();
    CHECK(std::count(answer.begin(), answer.end(), session->config.mask_token_id) == 0);
    CHECK(sampler.cache_refreshes() == 2);
    CHECK(sampler.cached_steps() == 14);
  }
}
