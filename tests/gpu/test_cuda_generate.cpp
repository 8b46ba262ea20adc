// CUDA pick against the CPU and the fixtures, CUDA forward logits, and whole generations on the
// fixture models (LLaDA2 and LLaDA-MoE included, with and without LLaDA2's block cache).
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <limits>
#include <map>
#include <memory>

#include "../fixture_cases.h"
#include "decode/engine.h"
#include "decode/sampler.h"
#include "decode/session.h"
#include "gpu_test.h"
#include "model/cpu_backend.h"
#include "tokenizer/tokenizer.h"

using namespace unmask;
using unmask::test::check_pick;
using unmask::test::settings_of;
using namespace unmask::gpu_test;

namespace {

nlohmann::json load_fixture(const std::string& name) {
  std::ifstream in(std::string(UNMASK_FIXTURES_DIR) + "/" + name);
  REQUIRE(in);
  return nlohmann::json::parse(in);
}


}  // namespace

TEST_CASE("cuda: pick matches the CPU on random rows, every option") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  std::mt19937 gen(8);
  for (int64_t vocab : {7, 400, 5000, 126464}) {
    for (int variant = 0; variant < 3; variant++) {  // 0 plain, 1 coarse values (ties), 2 CFG
      CAPTURE(vocab);
      CAPTURE(variant);
      // One row per option combination, LLaDA's mode and Dream's (filtered_confidence), all in
      // one pick call.
      std::vector<PickParams> params;
      for (bool filtered : {false, true})
        for (float t : {0.f, 0.7f, 2.f})
          for (int k : {0, 1, 5, 50})
            for (float p : {1.f, 0.9f, 0.3f, 0.5f}) {
              if (!filtered && p == 0.5f) continue;  // the LLaDA rows as before
              PickParams pp;
              pp.filtered_confidence = filtered;
              pp.seed = gen();
              pp.step = gen() % 64;
              pp.position = static_cast<uint32_t>(gen() % 1024);
              pp.temperature = t;
              pp.top_k = k;
              pp.top_p = p;
              pp.cfg_scale = variant == 2 ? 1.5f : 0.f;
              pp.uncond_row = static_cast<int32_t>(params.size() % 3);
              params.push_back(pp);
            }
      const int64_t rows = static_cast<int64_t>(params.size());
      std::vector<float> logits = random_values(gen, static_cast<size_t>(rows * vocab), 3.f);
      if (variant == 1)
        for (float& x : logits) x = std::round(x * 2.f) / 2.f;
      Twin l = make_twin(b, rows, vocab, logits);
      Twin u = make_twin(b, 3, vocab, random_values(gen, static_cast<size_t>(3 * vocab), 3.f));
      const std::vector<int32_t> banned = {static_cast<int32_t>(vocab / 2), 0};
      std::vector<PickResult> want(rows), got(rows);
      b.cpu->pick(l.cpu, variant == 2 ? &u.cpu : nullptr, params.data(), banned, want.data());
      b.gpu->pick(l.gpu, variant == 2 ? &u.gpu : nullptr, params.data(), banned, got.data());
      for (int64_t r = 0; r < rows; r++) {
        CAPTURE(r);
        CAPTURE(params[r].filtered_confidence);
        CAPTURE(params[r].temperature);
        CAPTURE(params[r].top_k);
        CAPTURE(params[r].top_p);
        check_pick(got[r], want[r]);
      }
    }
  }
}

TEST_CASE("cuda: filtered-confidence pick matches the CPU on exact top-p boundaries") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  // Ties of mass exactly 0.25 and distinct keys (a denormal above 0) whose mass before the third
  // entry is exactly top_p = 0.5: Dream keeps it ("<=").
  const float d = std::numeric_limits<float>::denorm_min();
  const std::vector<std::vector<float>> rows = {
      {0.f, 0.f, 0.f, 0.f}, {d, 0.f, 0.f, d}, {2.f, 1.f, 0.f, -1.f}, {0.f, 0.f, 0.f, 0.f}};
  for (float t : {0.f, 1.f}) {
    CAPTURE(t);
    std::vector<float> logits;
    std::vector<PickParams> params;
    for (size_t i = 0; i < rows.size(); i++) {
      logits.insert(logits.end(), rows[i].begin(), rows[i].end());
      PickParams pp;
      pp.filtered_confidence = true;
      pp.temperature = t;
      pp.seed = 17 + i;
      pp.top_p = 0.5f;
      pp.top_k = i == 3 ? 2 : 0;
      params.push_back(pp);
    }
    const int64_t n = static_cast<int64_t>(rows.size());
    Twin l = make_twin(b, n, 4, logits);
    std::vector<PickResult> want(rows.size()), got(rows.size());
    b.cpu->pick(l.cpu, nullptr, params.data(), {}, want.data());
    b.gpu->pick(l.gpu, nullptr, params.data(), {}, got.data());
    for (int64_t r = 0; r < n; r++) {
      CAPTURE(r);
      check_pick(got[r], want[r]);
    }
  }
}

TEST_CASE("cuda: pick reproduces the reference fixture rows") {
  UNMASK_REQUIRE_CUDA();
  auto gpu = make_cuda_backend();
  const auto j = load_fixture("pick.json");
  for (const auto& c : j["cases"]) {
    CAPTURE(c["name"].get<std::string>());
    const std::vector<float> row = c["logits"].get<std::vector<float>>();
    const int64_t vocab = static_cast<int64_t>(row.size());
    Tensor l{gpu->alloc(row.size() * 4), DType::F32, 1, vocab};
    gpu->upload(l.data, row.data(), row.size() * 4);
    Tensor u{nullptr, DType::F32, 0, vocab};
    if (!c["uncond_logits"].is_null()) {
      const std::vector<float> ur = c["uncond_logits"].get<std::vector<float>>();
      u = Tensor{gpu->alloc(ur.size() * 4), DType::F32, 1, vocab};
      gpu->upload(u.data, ur.data(), ur.size() * 4);
    }
    const PickParams p = unmask::test::pick_params_of(c);
    PickResult r;
    gpu->pick(l, u.data ? &u : nullptr, &p, {c["mask_token_id"].get<int32_t>()}, &r);
    check_pick(r, unmask::test::expected_pick(c["expected"]));
    gpu->free(l.data);
    if (u.data) gpu->free(u.data);
  }
}

TEST_CASE("cuda: pick reports a row whose every token is banned, and rows that are not finite") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  Twin l = make_twin(b, 1, 3, {1.f, 2.f, 3.f});
  PickParams p;
  PickResult r;
  b.gpu->pick(l.gpu, nullptr, &p, {0, 1, 2}, &r);
  CHECK(r.token == -1);
  CHECK(r.finite);
  b.gpu->pick(l.gpu, nullptr, &p, {2}, &r);  // and goes on
  CHECK(r.token == 1);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (bool filtered : {false, true}) {
    p.filtered_confidence = filtered;
    for (const std::vector<float>& row : {std::vector<float>{1.f, nan, 3.f}, {1.f, inf, 3.f},
                                          {-inf, 2.f, 3.f}, {nan, nan, nan}}) {
      Twin bad = make_twin(b, 1, 3, row);
      b.gpu->pick(bad.gpu, nullptr, &p, {2}, &r);
      CHECK(!r.finite);
      CHECK(r.token == -1);
      b.cpu->pick(bad.cpu, nullptr, &p, {2}, &r);
      CHECK(!r.finite);
    }
  }
}

TEST_CASE("cuda: forward logits match the float64 reference") {
  UNMASK_REQUIRE_CUDA();
  const auto j = load_fixture("forward.json");
  for (const auto& c : j["cases"]) {
    const std::string model = c["model"].get<std::string>();
    CAPTURE(model);
    auto session = open_session(std::string(UNMASK_FIXTURES_DIR) + "/" + model, "cuda", 0);
    REQUIRE(session->backend->name() == "cuda");
    ForwardBatch batch;
    batch.clear();
    for (const auto& seq : c["sequences"]) batch.add_sequence(seq.get<std::vector<int32_t>>());
    batch.out_rows = c["out_rows"].get<std::vector<int32_t>>();
    const Tensor logits = session->model->forward(batch);
    REQUIRE(logits.rows == static_cast<int64_t>(batch.out_rows.size()));
    std::vector<float> all(static_cast<size_t>(logits.numel()));
    session->backend->download(all.data(), logits.data, all.size() * sizeof(float));
    // bf16 weights multiply bf16-rounded activations on the GPU: the bf16 tolerance.
    const bool half = model.find("bf16") != std::string::npos;
    for (size_t r = 0; r < batch.out_rows.size(); r++) {
      const std::vector<float> got(all.begin() + r * logits.cols, all.begin() + (r + 1) * logits.cols);
      const auto want_d = c["logits"][r].get<std::vector<double>>();
      const std::vector<float> want(want_d.begin(), want_d.end());
      CHECK(rel_error(got, want) <= (half ? 1e-2 : 1e-4));
    }
  }
}

TEST_CASE("cuda: generation reproduces the reference token for token") {
  UNMASK_REQUIRE_CUDA();
  const auto j = load_fixture("generate.json");
  for (const auto& c : j["cases"]) {
    const std::string name = c["name"].get<std::string>(), model = c["model"].get<std::string>();
    CAPTURE(name);
    CAPTURE(model);
    auto session = open_session(std::string(UNMASK_FIXTURES_DIR) + "/" + model, "cuda", 0);
    REQUIRE(session->backend->name() == "cuda");
    Sampler sampler(c["prompt_ids"].get<std::vector<int32_t>>(), settings_of(c), session->config);
    Engine engine(*session->model);
    engine.run({&sampler});
    const auto expected = c["expected_ids"].get<std::vector<int32_t>>();
    if (model.find("bf16") == std::string::npos) {
      CHECK(sampler.answer() == expected);
      CHECK(sampler.filled_prompt() ==
            c.value("expected_filled_prompt_ids", c["prompt_ids"]).get<std::vector<int32_t>>());
      CHECK(sampler.forwards() == c["forwards"].get<int>());
    } else {
      // note: the GPU rounds activations to bf16 before bf16 GEMMs (the reference keeps them in
      // float64), an error of ~1e-3 against decision margins (min_gap) down to 5e-4 here.
      WARN_MESSAGE(sampler.answer() == expected,
                   "bf16 model: ids differ from the float64 reference (min_gap " << c["min_gap"] << ")");
    }
  }
}

TEST_CASE("cuda: a ragged batch of requests gives the same ids as each alone") {
  UNMASK_REQUIRE_CUDA();
  const auto j = load_fixture("generate.json");
  auto session = open_session(std::string(UNMASK_FIXTURES_DIR) + "/tiny-f32-gqa", "cuda", 0);
  auto batch = unmask::test::fixture_requests(j["cases"], "tiny-f32-gqa", session->config);
  REQUIRE(batch.samplers.size() >= 5);
  Engine engine(*session->model);
  engine.run(batch.samplers);
  for (size_t i = 0; i < batch.samplers.size(); i++)
    CHECK(batch.samplers[i]->answer() == batch.expected[i]);
  MESSAGE("peak device memory: " << session->backend->peak_bytes() << " bytes");
}

TEST_CASE("cuda: KV-cached generation gives the CPU's ids on the f32 fixture") {
  UNMASK_REQUIRE_CUDA();
  const auto cases = load_fixture("generate.json")["cases"];
  const std::string dir = std::string(UNMASK_FIXTURES_DIR) + "/tiny-f32-gqa";
  auto cpu = open_session(dir, "cpu", 1);
  auto gpu = open_session(dir, "cuda", 0);
  for (CacheMode mode : {CacheMode::Prefix, CacheMode::Dual}) {
    for (float cfg : {0.f, 1.f}) {
      CAPTURE(cache_mode_name(mode));
      CAPTURE(cfg);
      GenerationSettings s;
      s.gen_length = 24;
      s.steps = 12;
      s.block_length = 8;
      s.cache = mode;
      s.cfg_scale = cfg;
      s.eos_stop = false;
      const auto prompt = cases[0]["prompt_ids"].get<std::vector<int32_t>>();
      Sampler a(prompt, s, cpu->config), g(prompt, s, gpu->config);
      Engine ea(*cpu->model), eg(*gpu->model);
      ea.run({&a});
      eg.run({&g});
      CHECK(g.answer() == a.answer());
    }
  }
}

TEST_CASE("cuda: step graphs replay the layers and change no id") {
  UNMASK_REQUIRE_CUDA();
  const auto cases = load_fixture("generate.json")["cases"];
  const std::string dir = std::string(UNMASK_FIXTURES_DIR) + "/tiny-f32-gqa";
  std::vector<std::vector<int32_t>> answers;
  std::vector<int64_t> replays;
  for (const char* graphs : {"1", "0"}) {
    setenv("UNMASK_CUDA_GRAPHS", graphs, 1);
    auto session = open_session(dir, "cuda", 0);
    for (const auto& c : cases) {
      if (c["model"] != "tiny-f32-gqa" || c["cfg_scale"].get<float>() > 0.f) continue;
      Sampler sampler(c["prompt_ids"].get<std::vector<int32_t>>(), settings_of(c), session->config);
      Engine engine(*session->model);
      engine.run({&sampler});
      CHECK(sampler.answer() == c["expected_ids"].get<std::vector<int32_t>>());
      answers.push_back(sampler.answer());
    }
    replays.push_back(session->backend->replayed_steps());
  }
  unsetenv("UNMASK_CUDA_GRAPHS");
  CHECK(replays[0] > 0);   // same canvas at every step: recorded on the second, replayed after
  CHECK(replays[1] == 0);  // UNMASK_CUDA_GRAPHS=0: every step eager
  const size_t half = answers.size() / 2;
  for (size_t i = 0; i < half; i++) CHECK(answers[i] == answers[half + i]);
  MESSAGE("step graph replays: " << replays[0]);
}

TEST_CASE("cuda: Dream, llama-format and BPE-tokenized LLaDA fixtures generate as on the CPU") {
  UNMASK_REQUIRE_CUDA();
  const auto j = load_fixture("families.json");
  for (const auto& c : j["generate"]) {
    const std::string model = c["model"].get<std::string>();
    CAPTURE(c["name"].get<std::string>());
    std::optional<int32_t> mask;
    if (model == "tiny-llama") mask = c["mask_id"].get<int32_t>();
    const std::string dir = std::string(UNMASK_FIXTURES_DIR) + "/" + model;
    auto cpu = open_session(dir, "cpu", 1, mask);
    auto gpu = open_session(dir, "cuda", 0, mask);
    const GenerationSettings s = unmask::test::family_settings_of(c);
    const auto prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    Sampler a(prompt, s, cpu->config), g(prompt, s, gpu->config);
    Engine ea(*cpu->model), eg(*gpu->model);
    ea.run({&a});
    eg.run({&g});
    // bf16 weights: the GPU rounds activations to bf16 before its GEMMs, the CPU does not.
    WARN_MESSAGE(g.answer() == a.answer(), "bf16 model: GPU ids differ from the CPU's (min_gap "
                                               << c["min_gap"] << ")");
  }
}

namespace {

// The settings of a moe.json generate case (scripts/reference_moe.py), as tests/test_moe.cpp
// reads them: LLaDA2's loop (2.1 with an editing threshold) or LLaDA's block loop.
GenerationSettings moe_settings_of(const nlohmann::json& c) {
  GenerationSettings s;
  s.alg = c["loop"] == "llada2" ? Algorithm::Llada2 : Algorithm::Llada;
  s.gen_length = c["gen_length"].get<int>();
  s.steps = c["steps"].get<int>();
  s.block_length = c["block_length"].get<int>();
  if (!c["threshold"].is_null()) s.threshold = c["threshold"].get<float>();
  if (!c["editing_threshold"].is_null()) s.editing_threshold = c["editing_threshold"].get<float>();
  if (!c["max_post_steps"].is_null()) s.max_post_steps = c["max_post_steps"].get<int>();
  s.temperature = c["temperature"].get<float>();
  s.top_k = c["top_k"].get<int>();
  s.top_p = c["top_p"].get<float>();
  s.seed = c["seed"].get<uint64_t>();
  s.eos_stop = c["eos_early_stop"].get<bool>();
  return s;
}

// The answer cut after its first EOS (inclusive), as the references return it.
std::vector<int32_t> cut_after_eos(std::vector<int32_t> ids, int32_t eos) {
  auto it = std::find(ids.begin(), ids.end(), eos);
  if (it != ids.end()) ids.erase(it + 1, ids.end());
  return ids;
}

}  // namespace

TEST_CASE("cuda: LLaDA2 and LLaDA-MoE fixtures: forward rows and generations, with and without the block cache") {
  UNMASK_REQUIRE_CUDA();
  const auto j = load_fixture("moe.json");
  const std::string root = std::string(UNMASK_FIXTURES_DIR) + "/";
  // tiny-llada2 stores its matrices in bf16: the GPU rounds activations to bf16 before those
  // GEMMs (the reference keeps float64), so its ids may differ where decisions are close (min_gap,
  // route_gap); tiny-llada-moe is f32 and must match exactly.
  auto half = [](const std::string& model) { return model == "tiny-llada2"; };

  for (const auto& c : j["forward"]) {
    const std::string model = c["model"].get<std::string>(), block_length = c["block_length"].dump();
    CAPTURE(model);
    CAPTURE(block_length);
    auto session = open_session(root + model, "cuda", 0);
    REQUIRE(session->backend->name() == "cuda");
    ForwardBatch batch;
    batch.clear();
    batch.add_sequence(c["tokens"].get<std::vector<int32_t>>());
    batch.out_rows = c["rows"].get<std::vector<int32_t>>();
    if (!c["block_length"].is_null()) batch.block_size = c["block_length"].get<int32_t>();
    const Tensor logits = session->model->forward(batch);
    REQUIRE(logits.rows == static_cast<int64_t>(batch.out_rows.size()));
    std::vector<float> all(static_cast<size_t>(logits.numel()));
    session->backend->download(all.data(), logits.data, all.size() * sizeof(float));
    for (size_t r = 0; r < batch.out_rows.size(); r++) {
      CAPTURE(r);
      const std::vector<float> got(all.begin() + r * logits.cols, all.begin() + (r + 1) * logits.cols);
      const auto want_d = c["logits"][r].get<std::vector<double>>();
      const double error = rel_error(got, std::vector<float>(want_d.begin(), want_d.end()));
      CHECK(error <= (half(model) ? 1e-2 : 1e-4));
      // Each mutant is one classic mistake (full RoPE, qk-norm after RoPE, softmax routing, ...):
      // the rows must be nearer the reference than any of them.
      const nlohmann::json mutants = c.value("mutants", nlohmann::json::object());
      for (auto it = mutants.begin(); it != mutants.end(); ++it) {
        const std::string mistake = it.key();
        CAPTURE(mistake);
        const auto m = it.value()[r].get<std::vector<double>>();
        CHECK(rel_error(got, std::vector<float>(m.begin(), m.end())) > error);
      }
    }
  }

  std::map<std::string, std::unique_ptr<Session>> cpus, gpus;
  for (const auto& c : j["generate"]) {
    const std::string name = c["name"].get<std::string>(), model = c["model"].get<std::string>();
    CAPTURE(name);
    auto& cpu = cpus[model];
    auto& gpu = gpus[model];
    if (!cpu) cpu = open_session(root + model, "cpu", 1);
    if (!gpu) gpu = open_session(root + model, "cuda", 0);
    REQUIRE(gpu->backend->name() == "cuda");
    const auto prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    const auto expected = c["expected_ids"].get<std::vector<int32_t>>();
    const int32_t eos = gpu->config.eos_token_id;
    GenerationSettings s = moe_settings_of(c);
    std::vector<CacheMode> caches = {CacheMode::None};
    if (s.alg == Algorithm::Llada2) caches.push_back(CacheMode::Block);
    std::vector<std::vector<int32_t>> answers;
    for (CacheMode cache : caches) {
      const std::string cache_name = cache_mode_name(cache);
      CAPTURE(cache_name);
      s.cache = cache;
      Sampler a(prompt, s, cpu->config), g(prompt, s, gpu->config);
      Engine ea(*cpu->model), eg(*gpu->model);
      ea.run({&a});
      eg.run({&g});
      REQUIRE(a.error().empty());
      CHECK(g.error().empty());
      CHECK(g.answer().size() == static_cast<size_t>(s.gen_length));
      answers.push_back(g.answer());
      if (!half(model)) {
        CHECK(cut_after_eos(g.answer(), eos) == expected);
        CHECK(g.answer() == a.answer());
        CHECK(g.steps_done() == c["forwards"].get<int>());
        if (c.contains("edits")) CHECK(g.edits() == c["edits"].get<int>());
      } else {
        WARN_MESSAGE(cut_after_eos(g.answer(), eos) == expected,
                     "bf16 model: ids differ from the float64 reference (min_gap " << c["min_gap"] << ", route_gap "
                                                                                   << c["route_gap"] << ")");
        WARN_MESSAGE(g.answer() == a.answer(), "bf16 model: GPU ids differ from the CPU's (min_gap "
                                                   << c["min_gap"] << ", route_gap " << c["route_gap"] << ")");
      }
    }
    // The block cache is exact: the same ids as the full window (bf16: the GEMMs' row counts
    // differ between the two, so a close decision may still flip).
    if (answers.size() == 2) {
      if (!half(model)) CHECK(answers[1] == answers[0]);
      else WARN_MESSAGE(answers[1] == answers[0], "bf16 model: the block cache changed an id (min_gap " << c["min_gap"] << ")");
    }
  }
}
