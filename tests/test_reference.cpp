// The CPU backend, forward pass and sampler against scripts/reference.py's fixtures.
#include <doctest/doctest.h>
#include <unistd.h>

#include "decode/engine.h"
#include "decode/session.h"
#include "fixture_cases.h"
#include "fixtures.h"
#include "model/cpu_backend.h"
#include "model/rng.h"

using namespace unmask;
using unmask::test::settings_of;
using unmask::test::fixture;
using unmask::test::load_json;

TEST_CASE("noise generator matches the reference values") {
  const auto j = load_json(fixture("pick.json"));
  CHECK(splitmix64(0) == j["splitmix64_of_0"].get<uint64_t>());
  CHECK(splitmix64(0) == 0xE220A8397B1DCDAFull);
  for (const auto& n : j["noise"]) {
    const uint64_t bits = noise_bits(n["seed"].get<uint64_t>(), n["stream"].get<uint32_t>(),
                                     n["step"].get<uint32_t>(), n["position"].get<uint32_t>(),
                                     n["index"].get<uint32_t>());
    CHECK(bits == n["bits"].get<uint64_t>());
    CHECK(noise_uniform(bits) == n["uniform"].get<double>());
    CHECK(noise_gumbel(bits) == n["gumbel"].get<double>());
  }
}

TEST_CASE("pick matches the reference on every fixture row") {
  const auto j = load_json(fixture("pick.json"));
  std::vector<int32_t> scratch;
  for (const auto& c : j["cases"]) {
    CAPTURE(c["name"].get<std::string>());
    std::vector<float> row = c["logits"].get<std::vector<float>>();
    std::vector<float> uncond;
    const PickParams p = unmask::test::pick_params_of(c);
    if (!c["uncond_logits"].is_null()) uncond = c["uncond_logits"].get<std::vector<float>>();
    const std::vector<int32_t> banned = {c["mask_token_id"].get<int32_t>()};
    const PickResult r = pick_row(row.data(), uncond.empty() ? nullptr : uncond.data(),
                                  static_cast<int64_t>(row.size()), p, banned, scratch);
    unmask::test::check_pick(r, unmask::test::expected_pick(c["expected"]));
  }
}

TEST_CASE("forward logits match the float64 reference") {
  const auto j = load_json(fixture("forward.json"));
  for (const auto& c : j["cases"]) {
    const std::string model = c["model"].get<std::string>();
    CAPTURE(model);
    auto session = open_session(fixture(model), "cpu", 0);
    ForwardBatch batch;
    batch.clear();
    for (const auto& seq : c["sequences"]) batch.add_sequence(seq.get<std::vector<int32_t>>());
    batch.out_rows = c["out_rows"].get<std::vector<int32_t>>();
    Tensor logits = session->model->forward(batch);
    REQUIRE(logits.rows == static_cast<int64_t>(batch.out_rows.size()));
    // Weights of both models are exact in float32, so both get the float32 tolerance.
    for (size_t r = 0; r < batch.out_rows.size(); r++) {
      std::vector<float> got(logits.f32() + r * logits.cols, logits.f32() + (r + 1) * logits.cols);
      const auto want = c["logits"][r].get<std::vector<double>>();
      REQUIRE(got.size() == want.size());
      CHECK(unmask::test::relative_error(got, want) <= 1e-4);
    }
  }
}

TEST_CASE("generation reproduces the reference token for token") {
  const auto j = load_json(fixture("generate.json"));
  for (const auto& c : j["cases"]) {
    CAPTURE(c["name"].get<std::string>());
    CAPTURE(c["model"].get<std::string>());
    auto session = open_session(fixture(c["model"].get<std::string>()), "cpu", 0);
    const auto prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    CHECK(session->tokenizer->encode(c["prompt_text"].get<std::string>()) == prompt);
    Sampler sampler(prompt, settings_of(c), session->config);
    Engine engine(*session->model);
    engine.run({&sampler});
    CHECK(sampler.answer() == c["expected_ids"].get<std::vector<int32_t>>());
    // Masks written in the prompt are filled as the reference fills them (infilling).
    CHECK(sampler.filled_prompt() ==
          c.value("expected_filled_prompt_ids", c["prompt_ids"]).get<std::vector<int32_t>>());
    CHECK(sampler.forwards() == c["forwards"].get<int>());
    CHECK(decode_text(*session->tokenizer, sampler.answer(), session->config.stop_token_ids) ==
          c["expected_text"].get<std::string>());
  }
}

TEST_CASE("a request gives the same ids alone and inside a ragged batch") {
  const auto j = load_json(fixture("generate.json"));
  auto session = open_session(fixture("tiny-f32-gqa"), "cpu", 0);
  auto batch = unmask::test::fixture_requests(j["cases"], "tiny-f32-gqa", session->config);
  REQUIRE(batch.samplers.size() >= 5);
  Engine engine(*session->model);
  engine.run(batch.samplers);
  for (size_t i = 0; i < batch.samplers.size(); i++)
    CHECK(batch.samplers[i]->answer() == batch.expected[i]);
  // Fewer batched forwards than the sum of per-request ones: the batch really was shared.
  int64_t separate = 0;
  for (Sampler* s : batch.samplers) separate += s->steps_done();
  CHECK(engine.stats().forward_calls < separate);
}
