// KV caches (--cache prefix|dual): exactness where nothing changed, batch invariance, stats.
#include <doctest/doctest.h>

#include "decode/engine.h"
#include "decode/session.h"
#include "fixtures.h"

using namespace unmask;
using unmask::test::fixture;
using unmask::test::load_json;

namespace {
GenerationSettings base_settings(int gen, int steps, int block) {
  GenerationSettings s;
  s.gen_length = gen;
  s.steps = steps;
  s.block_length = block;
  s.eos_stop = false;
  return s;
}

std::vector<int32_t> generate(Session& session, const std::vector<int32_t>& prompt,
                              const GenerationSettings& s) {
  Sampler sampler(prompt, s, session.config);
  Engine engine(*session.model);
  engine.run({&sampler});
  return sampler.answer();
}
}  // namespace

TEST_CASE("cache: one step per block is a full forward each time, so ids equal no cache") {
  const auto cases = load_json(fixture("generate.json"))["cases"];
  for (const char* model : {"tiny-f32-gqa", "tiny-bf16-tied"}) {
    CAPTURE(model);
    auto session = open_session(fixture(model), "cpu", 1);
    const auto prompt = cases[0]["prompt_ids"].get<std::vector<int32_t>>();
    for (auto [gen, block] : {std::pair{16, 16}, std::pair{24, 8}}) {
      GenerationSettings s = base_settings(gen, gen / block, block);  // one step per block
      const auto plain = generate(*session, prompt, s);
      for (CacheMode mode : {CacheMode::Prefix, CacheMode::Dual}) {
        s.cache = mode;
        CHECK(generate(*session, prompt, s) == plain);
      }
      s.cache = CacheMode::None;
    }
  }
}

TEST_CASE("cache: a cached forward equals the reference full forward when nothing changed") {
  // forward.json's single-sequence cases: refresh the cache with the canvas, then recompute only
  // a window of it (dual: a block; prefix: the block and everything after). The cached rows are
  // exact, so the window's logits must match the float64 reference's full forward.
  const auto j = load_json(fixture("forward.json"));
  int checked = 0;
  for (const auto& c : j["cases"]) {
    if (c["sequences"].size() != 1) continue;
    CAPTURE(c["model"].get<std::string>());
    auto session = open_session(fixture(c["model"].get<std::string>()), "cpu", 1);
    const auto canvas = c["sequences"][0].get<std::vector<int32_t>>();
    const auto out_rows = c["out_rows"].get<std::vector<int32_t>>();
    const int32_t len = static_cast<int32_t>(canvas.size());
    Model& model = *session->model;
    model.reserve_cache(len);
    ForwardBatch refresh;
    refresh.clear();
    refresh.add_cached_sequence(canvas, 0, len, 0);
    model.forward(refresh);
    for (auto [first, last] : {std::pair{len / 3, 2 * len / 3}, std::pair{len / 3, len}}) {
      ForwardBatch window;
      window.clear();
      const int32_t start = window.add_cached_sequence(canvas, first, last, 0);
      std::vector<size_t> fixture_index;
      for (size_t i = 0; i < out_rows.size(); i++) {
        if (out_rows[i] < first || out_rows[i] >= last) continue;
        window.out_rows.push_back(start + out_rows[i] - first);
        fixture_index.push_back(i);
      }
      if (window.out_rows.empty()) {  // ask for every row of the window instead
        continue;
      }
      Tensor logits = model.forward(window);
      for (size_t r = 0; r < fixture_index.size(); r++) {
        std::vector<float> got(logits.f32() + r * logits.cols, logits.f32() + (r + 1) * logits.cols);
        const auto want = c["logits"][fixture_index[r]].get<std::vector<double>>();
        CHECK(unmask::test::relative_error(got, want) <= 1e-5);
        checked++;
      }
    }
  }
  CHECK(checked >= 2);
}

TEST_CASE("cache: requests give the same ids alone and inside a ragged batch, CFG included") {
  const auto cases = load_json(fixture("generate.json"))["cases"];
  auto session = open_session(fixture("tiny-f32-gqa"), "cpu", 1);
  for (CacheMode mode : {CacheMode::Prefix, CacheMode::Dual}) {
    CAPTURE(cache_mode_name(mode));
    std::vector<std::unique_ptr<Sampler>> owned;
    std::vector<Sampler*> batch;
    std::vector<std::vector<int32_t>> alone;
    for (int i = 0; i < 4; i++) {
      GenerationSettings s = base_settings(24, 12, 8);
      s.cache = mode;
      s.cfg_scale = i == 2 ? 1.f : 0.f;
      s.temperature = i == 3 ? 0.7f : 0.f;
      s.seed = static_cast<uint64_t>(i);
      const auto prompt = cases[i]["prompt_ids"].get<std::vector<int32_t>>();
      alone.push_back(generate(*session, prompt, s));
      owned.push_back(std::make_unique<Sampler>(prompt, s, session->config));
      batch.push_back(owned.back().get());
    }
    Engine engine(*session->model);
    engine.run(batch);
    for (size_t i = 0; i < batch.size(); i++) CHECK(batch[i]->answer() == alone[i]);
    // 3 blocks of 4 steps: one refresh and three cached steps per block and sequence.
    CHECK(engine.stats().cache_refreshes == 3 * 5);
    CHECK(engine.stats().cached_forwards == 9 * 5);
  }
}

TEST_CASE("cache: stale rows are really reused until the next refresh") {
  // Change a token outside the recomputed window: a cached forward keeps the old K/V for it and
  // so differs from a full forward of the new canvas; that difference is the approximation.
  auto session = open_session(fixture("tiny-f32-gqa"), "cpu", 1);
  Model& model = *session->model;
  std::vector<int32_t> canvas = {350, 383, 356, 261, 1, 1, 1, 1, 1, 1, 1, 1};
  const int32_t len = static_cast<int32_t>(canvas.size());
  model.reserve_cache(len);
  auto logits_of = [&](ForwardBatch& b) {
    Tensor t = model.forward(b);
    return std::vector<float>(t.f32(), t.f32() + t.cols);
  };
  ForwardBatch full;
  full.clear();
  full.add_cached_sequence(canvas, 0, len, 0);
  full.out_rows = {6};
  logits_of(full);                // refresh with the old canvas
  canvas[10] = 300;               // a later position is committed outside the window [4, 8)
  ForwardBatch window;
  window.clear();
  const int32_t start = window.add_cached_sequence(canvas, 4, 8, 0);
  window.out_rows = {start + 2};  // position 6
  const auto cached = logits_of(window);
  ForwardBatch fresh;
  fresh.clear();
  fresh.add_sequence(canvas);
  fresh.out_rows = {6};
  const auto exact = logits_of(fresh);
  std::vector<double> exact64(exact.begin(), exact.end());
  CHECK(unmask::test::relative_error(cached, exact64) > 1e-4);
  // A refresh with the new canvas makes the window exact again.
  ForwardBatch refresh;
  refresh.clear();
  refresh.add_cached_sequence(canvas, 0, len, 0);
  logits_of(refresh);
  CHECK(unmask::test::relative_error(logits_of(window), exact64) <= 1e-5);
}
