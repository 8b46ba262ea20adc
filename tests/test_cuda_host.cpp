// CPU-side parts of the CUDA backend: noise values, sizing rules, the pick algorithm's host model, auto fallback.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "../cuda/pick_select.h"
#include "../cuda/plan.h"
#include "backend.h"
#include "common.h"
#include "cpu_backend.h"
#include "fixture_cases.h"
#include "fixtures.h"
#include "rng.h"

#if defined(UNMASK_WITH_CUDA)
#include "cuda_backend.h"
#endif

using namespace unmask;
namespace plan = unmask::cuda_plan;

TEST_CASE("cuda host: noise functions give the documented values") {
  CHECK(splitmix64(0) == 0xE220A8397B1DCDAFull);
  CHECK(noise_uniform(0) > 0.0);
  CHECK(noise_uniform(~uint64_t{0}) < 1.0);
  std::mt19937_64 gen(7);
  for (int i = 0; i < 1000; i++) {
    const uint64_t bits = noise_bits(gen(), kStreamGumbel, static_cast<uint32_t>(i), 3, 5);
    const double u = noise_uniform(bits);
    CHECK((u > 0.0 && u < 1.0));
    CHECK(std::isfinite(noise_gumbel(bits)));
  }
  // synthetic weights stay inside (-scale, scale)
  for (uint64_t i = 0; i < 100; i++) CHECK(std::fabs(synthetic_weight(1, i, 0.5f)) < 0.5f);
}

TEST_CASE("cuda host: scratch grows rarely and to a rounded size") {
  CHECK(plan::grow_bytes(0, 0) == 0);
  CHECK(plan::grow_bytes(4 * plan::kMiB, 3 * plan::kMiB) == 0);
  CHECK(plan::grow_bytes(0, 1) == plan::kMiB);
  CHECK(plan::grow_bytes(0, 5 * plan::kMiB + 1) == 6 * plan::kMiB);
  CHECK(plan::grow_bytes(10 * plan::kMiB, 11 * plan::kMiB) == 15 * plan::kMiB);  // at least 1.5x
  // A workload creeping up byte by byte reallocates only logarithmically often.
  size_t cap = 0;
  int grows = 0;
  for (size_t need = 1; need < 512 * plan::kMiB; need += plan::kMiB / 3) {
    const size_t g = plan::grow_bytes(cap, need);
    if (g) {
      CHECK(g >= need);
      cap = g;
      grows++;
    }
  }
  CHECK(grows < 20);
  CHECK(plan::matmul_scratch_bytes(7, 72, DType::F32) == 0);
  CHECK(plan::matmul_scratch_bytes(7, 72, DType::BF16) == 7 * 72 * 2);
  CHECK(plan::matmul_scratch_bytes(33, 4096, DType::F16) == 33 * 4096 * 2);
}

TEST_CASE("cuda host: staging packs uploads between syncs") {
  // First upload allocates the buffer.
  auto s = plan::staging_step(0, 0, 100);
  CHECK(s.sync_first);
  CHECK(s.grow_to == plan::kStagingInitialBytes);
  CHECK(s.offset == 0);
  // Following ones pack at aligned offsets.
  s = plan::staging_step(100, plan::kStagingInitialBytes, 40);
  CHECK(!s.sync_first);
  CHECK(s.grow_to == 0);
  CHECK(s.offset == 256);
  // Full: wait for the copies, restart at 0.
  s = plan::staging_step(plan::kStagingInitialBytes - 10, plan::kStagingInitialBytes, 100);
  CHECK(s.sync_first);
  CHECK(s.grow_to == 0);
  CHECK(s.offset == 0);
  // Bigger than the buffer: grow (power of two steps).
  s = plan::staging_step(0, plan::kStagingInitialBytes, 3 * plan::kMiB);
  CHECK(s.sync_first);
  CHECK(s.grow_to == 4 * plan::kMiB);
  // Huge: direct copy.
  s = plan::staging_step(0, plan::kStagingInitialBytes, plan::kStagingMaxBytes + 1);
  CHECK(s.direct);
}

TEST_CASE("cuda host: attention tiles fit every supported GPU") {
  const size_t ampere = 163 * 1024, ada = 99 * 1024, hopper = 227 * 1024;
  for (int hd : {8, 16, 24, 64, 72, 96, 128, 160, 256}) {
    CAPTURE(hd);
    for (size_t limit : {ampere, ada, hopper}) {
      plan::AttentionPlan p;
      std::string why;
      REQUIRE(plan::attention_plan(hd, limit, &p, &why));
      const auto& v = plan::kAttentionVariants[p.variant];
      CHECK(hd <= v.max_head_dim);
      CHECK(p.smem_bytes <= limit);
      CHECK(p.smem_bytes == plan::attention_smem_bytes(hd, v.q_tile, v.kv_tile));
      // Every output element of the tile has a thread.
      CHECK(plan::attention_acc_per_thread(v) * plan::kAttentionThreads >= v.q_tile * hd);
    }
  }
  plan::AttentionPlan p;
  std::string why;
  CHECK(!plan::attention_plan(257, 227 * 1024, &p, &why));
  CHECK(why.find("256") != std::string::npos);
  CHECK(!plan::attention_plan(128, 16 * 1024, &p, &why));
  CHECK(!plan::attention_plan(0, 227 * 1024, &p, &why));
}

TEST_CASE("cuda host: order keys sort like the floats") {
  std::mt19937 gen(3);
  std::normal_distribution<float> normal(0.f, 100.f);
  std::vector<float> xs = {0.f, -0.f, 1e-40f, -1e-40f, -INFINITY, INFINITY, 1.f, -1.f};
  for (int i = 0; i < 2000; i++) xs.push_back(normal(gen));
  for (float a : xs) {
    CHECK(pick::key_value(pick::order_key(a)) == a);
    for (int j = 0; j < 20; j++) {
      const float b = xs[static_cast<size_t>(j * 97) % xs.size()];
      CHECK((a < b) == (pick::order_key(a) < pick::order_key(b)));
      CHECK((a == b) == (pick::order_key(a) == pick::order_key(b)));
    }
  }
  CHECK(pick::order_key(-0.f) == pick::order_key(0.f));
}

// The kernel's algorithm (radix boundaries instead of sorting) against the CPU's pick_row.
TEST_CASE("cuda host: the pick kernel's algorithm reproduces pick_row") {
  std::mt19937 gen(11);
  std::normal_distribution<float> normal(0.f, 3.f);
  std::vector<int32_t> scratch;
  int cases = 0;
  for (int64_t vocab : {1, 2, 7, 400, 5000}) {
    for (int variant = 0; variant < 3; variant++) {  // 0 plain, 1 many ties, 2 CFG
      for (float temperature : {0.f, 0.7f, 2.f}) {
        for (int top_k : {0, 1, 5, 50}) {
          for (float top_p : {1.f, 0.9f, 0.3f}) {
            CAPTURE(vocab);
            CAPTURE(variant);
            CAPTURE(temperature);
            CAPTURE(top_k);
            CAPTURE(top_p);
            std::vector<float> row(vocab), uncond(vocab);
            for (auto& x : row) x = normal(gen);
            for (auto& x : uncond) x = normal(gen);
            if (variant == 1)  // coarse values: ties straddle the top-k/top-p boundaries
              for (auto& x : row) x = std::round(x * 2.f) / 2.f;
            PickParams p;
            p.seed = gen();
            p.step = gen() % 100;
            p.position = gen() % 1000;
            p.temperature = temperature;
            p.top_k = top_k;
            p.top_p = top_p;
            p.cfg_scale = variant == 2 ? 1.5f : 0.f;
            p.uncond_row = 0;
            std::vector<int32_t> banned;
            if (vocab > 1) banned.push_back(static_cast<int32_t>(gen() % vocab));
            if (vocab > 2) banned.push_back(static_cast<int32_t>(gen() % vocab));
            const float* u = variant == 2 ? uncond.data() : nullptr;
            const PickResult model = pick::pick_row_model(row.data(), u, vocab, p, banned);
            std::vector<float> work = row;
            const PickResult want = pick_row(work.data(), u, vocab, p, banned, scratch);
            unmask::test::check_pick(model, want);
            cases++;
          }
        }
      }
    }
  }
  CHECK(cases == 5 * 3 * 3 * 4 * 3);
}

TEST_CASE("cuda host: the pick algorithm matches the reference fixture rows") {
  const auto j = unmask::test::load_json(unmask::test::fixture("pick.json"));
  for (const auto& c : j["cases"]) {
    CAPTURE(c["name"].get<std::string>());
    const std::vector<float> row = c["logits"].get<std::vector<float>>();
    std::vector<float> uncond;
    if (!c["uncond_logits"].is_null()) uncond = c["uncond_logits"].get<std::vector<float>>();
    PickParams p;
    p.seed = c["seed"].get<uint64_t>();
    p.step = c["step"].get<uint32_t>();
    p.position = c["position"].get<uint32_t>();
    p.temperature = c["temperature"].get<float>();
    p.top_k = c["top_k"].get<int32_t>();
    p.top_p = c["top_p"].get<float>();
    p.cfg_scale = c["cfg_scale"].get<float>();
    p.uncond_row = 0;
    const PickResult r = pick::pick_row_model(row.data(), uncond.empty() ? nullptr : uncond.data(),
                                              static_cast<int64_t>(row.size()), p,
                                              {c["mask_token_id"].get<int32_t>()});
    unmask::test::check_pick(r, unmask::test::expected_pick(c["expected"]));
  }
}

TEST_CASE("cuda host: a row with every token banned has no winner") {
  const std::vector<float> row = {1.f, 2.f, 3.f};
  PickParams p;
  CHECK(pick::pick_row_model(row.data(), nullptr, 3, p, {0, 1, 2}).token == -1);
  CHECK(pick::pick_row_model(row.data(), nullptr, 3, p, {0, 2}).token == 1);
}

TEST_CASE("cuda host: --backend auto falls back to the CPU without a usable device") {
  auto backend = make_backend("auto", 1);
  REQUIRE(backend);
#if defined(UNMASK_WITH_CUDA)
  std::string why;
  const bool usable = cuda_device_usable(&why);
  CHECK(backend->name() == (usable ? "cuda" : "cpu"));
  if (!usable) {
    CHECK(!why.empty());
    CHECK(why.find('\n') == std::string::npos);
    // An explicit --backend cuda fails with one runtime-error line.
    try {
      make_backend("cuda", 1);
      FAIL("make_backend(\"cuda\") succeeded without a usable device");
    } catch (const Error& e) {
      CHECK(e.exit_code() == kExitRuntime);
      CHECK(std::string(e.what()).find('\n') == std::string::npos);
    }
  }
#else
  CHECK(backend->name() == "cpu");
#endif
}
