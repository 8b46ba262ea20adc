// CPU-side parts of the CUDA backend: noise values, sizing rules, the pick algorithm's host model,
// the step-graph policy and keys, auto fallback.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "common.h"
#include "cuda/moe_select.h"
#include "cuda/pick_select.h"
#include "cuda/plan.h"
#include "cuda/step_graph.h"
#include "decode/engine.h"
#include "fixture_cases.h"
#include "fixtures.h"
#include "model/backend.h"
#include "model/cpu_backend.h"
#include "model/rng.h"
#include "model/synthetic.h"

#if defined(UNMASK_WITH_CUDA)
#include "cuda/cuda_backend.h"
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

namespace {

// A random pick row and its settings. Variants: 0 plain, 1 coarse values (ties straddle the
// top-k/top-p boundaries), 2 CFG, 3 most of the row banned, 4 flat-ish (top-p keeps many).
struct RandomPick {
  std::vector<float> row, uncond;
  PickParams params;
  std::vector<int32_t> banned;
  const float* uncond_or_null() const { return params.cfg_scale > 0.f ? uncond.data() : nullptr; }
};

RandomPick random_pick(std::mt19937& gen, int64_t vocab, int variant, float temperature, int top_k,
                       float top_p) {
  std::normal_distribution<float> normal(0.f, 3.f);
  RandomPick c;
  c.row.resize(vocab);
  c.uncond.resize(vocab);
  for (auto& x : c.row) x = normal(gen);
  for (auto& x : c.uncond) x = normal(gen);
  if (variant == 1)
    for (auto& x : c.row) x = std::round(x * 2.f) / 2.f;
  if (variant == 4)
    for (auto& x : c.row) x *= 0.05f;
  PickParams& p = c.params;
  p.seed = gen();
  p.step = gen() % 100;
  p.position = gen() % 1000;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.cfg_scale = variant == 2 ? 1.5f : 0.f;
  p.uncond_row = 0;
  if (variant == 3) {
    for (int64_t v = 0; v + 3 < vocab; v++) c.banned.push_back(static_cast<int32_t>((v * 7 + 1) % vocab));
  } else {
    if (vocab > 1) c.banned.push_back(static_cast<int32_t>(gen() % vocab));
    if (vocab > 2) c.banned.push_back(static_cast<int32_t>(gen() % vocab));
  }
  return c;
}

}  // namespace

// The kernel's algorithm (radix boundaries instead of sorting) against the CPU's pick_row.
TEST_CASE("cuda host: the pick kernel's algorithm reproduces pick_row") {
  std::mt19937 gen(11);
  std::vector<int32_t> scratch;
  int cases = 0;
  for (int64_t vocab : {1, 2, 7, 400, 5000}) {
    for (int variant = 0; variant < 3; variant++) {  // plain, coarse, CFG (see random_pick)
      for (float temperature : {0.f, 0.7f, 2.f}) {
        for (int top_k : {0, 1, 5, 50}) {
          for (float top_p : {1.f, 0.9f, 0.3f}) {
            CAPTURE(vocab);
            CAPTURE(variant);
            CAPTURE(temperature);
            CAPTURE(top_k);
            CAPTURE(top_p);
            const RandomPick c = random_pick(gen, vocab, variant, temperature, top_k, top_p);
            const float* u = c.uncond_or_null();
            const PickResult model = pick::pick_row_model(c.row.data(), u, vocab, c.params, c.banned);
            std::vector<float> work = c.row;
            const PickResult want = pick_row(work.data(), u, vocab, c.params, c.banned, scratch);
            unmask::test::check_pick(model, want);
            cases++;
          }
        }
      }
    }
  }
  CHECK(cases == 5 * 3 * 3 * 4 * 3);
}

// The same for the filtered_confidence mode (Dream's sample_tokens), row by row next to the LLaDA
// mode on the same rows. Tolerance: check_pick's 1e-5 relative (doctest Approx); the model and
// pick_row sum the same doubles in different orders, so they differ by ~1e-15.
TEST_CASE("cuda host: the pick kernel's algorithm reproduces pick_row with filtered confidence") {
  std::mt19937 gen(12);
  std::vector<int32_t> scratch;
  int cases = 0, prob_differs = 0, kept_differs = 0;
  for (int64_t vocab : {1, 2, 3, 7, 33, 400, 5001}) {
    for (int variant = 0; variant < 5; variant++) {  // every variant of random_pick
      if (variant == 3 && vocab > 400) continue;  // the model scans the ban list per value
      for (float temperature : {0.f, 0.7f}) {
        for (int top_k : {0, 1, 5, 40}) {
          for (float top_p : {1.f, 0.9f, 0.5f}) {
            CAPTURE(vocab);
            CAPTURE(variant);
            CAPTURE(temperature);
            CAPTURE(top_k);
            CAPTURE(top_p);
            RandomPick c = random_pick(gen, vocab, variant, temperature, top_k, top_p);
            const std::vector<float>& row = c.row;
            const std::vector<int32_t>& banned = c.banned;
            PickParams& p = c.params;
            const float* u = c.uncond_or_null();

            p.filtered_confidence = true;
            const PickResult model = pick::pick_row_model(row.data(), u, vocab, p, banned);
            std::vector<float> work = row;
            const PickResult want = pick_row(work.data(), u, vocab, p, banned, scratch);
            unmask::test::check_pick(model, want);

            p.filtered_confidence = false;
            const PickResult llada = pick::pick_row_model(row.data(), u, vocab, p, banned);
            work = row;
            unmask::test::check_pick(llada, pick_row(work.data(), u, vocab, p, banned, scratch));
            if (top_p < 1.f && std::fabs(llada.prob - model.prob) > 1e-3f) prob_differs++;
            // Dream renormalises over the survivors, so prob >= the unfiltered prob (equal when all
            // survive); with T = 0 both modes pick over the same values.
            if (temperature == 0.f && top_k == 0) {
              CHECK(model.prob >= llada.prob * (1.f - 1e-5f));
              if (model.prob > llada.prob * (1.f + 1e-5f)) kept_differs++;
            }
            cases++;
          }
        }
      }
    }
  }
  CHECK(cases == (7 * 5 - 1) * 2 * 4 * 3);
  CHECK(prob_differs > 50);  // the modes really differ where top-p filters
  CHECK(kept_differs > 10);
}

// Exact boundaries of Dream's top-p: entries stay while the mass before them is <= top_p.
TEST_CASE("cuda host: filtered confidence keeps the entry whose preceding mass equals top_p") {
  std::vector<int32_t> scratch;
  auto both = [&](std::vector<float> row, PickParams p) {
    p.filtered_confidence = true;
    const PickResult model = pick::pick_row_model(row.data(), nullptr, static_cast<int64_t>(row.size()), p, {});
    const PickResult want = pick_row(row.data(), nullptr, static_cast<int64_t>(row.size()), p, {}, scratch);
    unmask::test::check_pick(model, want);
    return model;
  };
  PickParams p;
  p.top_p = 0.5f;
  // Four ties of 0.25: masses before them 0, 0.25, 0.5 (kept), 0.75. LLaDA's "<" would keep two.
  PickResult r = both({0.f, 0.f, 0.f, 0.f}, p);
  CHECK(r.token == 0);
  CHECK(r.prob == doctest::Approx(1.0 / 3.0).epsilon(1e-6));
  CHECK(r.margin == 0.f);
  CHECK(r.entropy == doctest::Approx(std::log(3.0)).epsilon(1e-6));
  // Distinct keys on the boundary: a denormal sits above 0 but exp() of their difference rounds to
  // 1, so every mass is exactly 0.25 and the cut (0.5 before the third entry) falls between keys.
  const float d = std::numeric_limits<float>::denorm_min();
  r = both({d, 0.f, 0.f, d}, p);
  CHECK(r.token == 0);
  CHECK(r.prob == doctest::Approx(1.0 / 3.0).epsilon(1e-6));
  // The third survivor is index 1 (ties by index): with T > 0 the Gumbel winner is one of 0, 3, 1.
  for (uint64_t seed = 0; seed < 64; seed++) {
    PickParams q = p;
    q.temperature = 1.f;
    q.seed = seed;
    const int32_t t = both({d, 0.f, 0.f, d}, q).token;
    CHECK((t == 0 || t == 1 || t == 3));
  }
  // Top-p alone cuts after the top entry; top-k after top-p; the statistics renormalise.
  p.top_p = 0.5f;
  r = both({2.f, 1.f, 0.f, -1.f}, p);
  CHECK(r.token == 0);
  CHECK(r.prob == 1.f);
  CHECK(r.margin == 1.f);
  CHECK(std::fabs(r.entropy) < 1e-6f);
  p.top_p = 0.9f;
  p.top_k = 2;
  r = both({2.f, 1.f, 0.f, -1.f}, p);
  CHECK(r.prob == doctest::Approx(1.0 / (1.0 + std::exp(-1.0))).epsilon(1e-6));
  // Temperature divides before the softmax: T = 2 flattens it.
  p.top_p = 1.f;
  p.top_k = 0;
  p.temperature = 2.f;
  p.seed = 5;
  r = both({2.f, 0.f}, p);
  CHECK(r.prob == doctest::Approx((r.token == 0 ? 1.0 : std::exp(-1.0)) / (1.0 + std::exp(-1.0))).epsilon(1e-6));
}

TEST_CASE("cuda host: the pick algorithm matches the reference fixture rows") {
  const auto j = unmask::test::load_json(unmask::test::fixture("pick.json"));
  for (const auto& c : j["cases"]) {
    CAPTURE(c["name"].get<std::string>());
    const std::vector<float> row = c["logits"].get<std::vector<float>>();
    std::vector<float> uncond;
    if (!c["uncond_logits"].is_null()) uncond = c["uncond_logits"].get<std::vector<float>>();
    const PickParams p = unmask::test::pick_params_of(c);
    const PickResult r = pick::pick_row_model(row.data(), uncond.empty() ? nullptr : uncond.data(),
                                              static_cast<int64_t>(row.size()), p,
                                              {c["mask_token_id"].get<int32_t>()});
    unmask::test::check_pick(r, unmask::test::expected_pick(c["expected"]));
  }
}

// first_banned: the mask (entry 0 of the list) stays choosable while the rest stay banned.
TEST_CASE("cuda host: first_banned unbans the head of the list, in the kernel's model and the CPU") {
  std::mt19937 gen(13);
  std::vector<int32_t> scratch;
  for (int variant = 0; variant < 5; variant++) {
    for (int first : {0, 1, 2}) {
      for (int n_banned : {-1, 1, 2}) {
        CAPTURE(variant);
        CAPTURE(first);
        CAPTURE(n_banned);
        // Variant 0 at temperature 0: the mask wins exactly when it is choosable.
        RandomPick c = random_pick(gen, 400, variant, variant == 0 ? 0.f : 0.7f, variant == 1 ? 5 : 0, 0.9f);
        std::erase_if(c.banned, [](int32_t v) { return v == 7 || v == 9; });
        c.banned.insert(c.banned.begin(), {7, 9});
        c.row[7] = 30.f;  // the mask would win whenever it is choosable
        c.row[9] = 29.f;
        c.params.first_banned = first;
        c.params.n_banned = n_banned;
        const float* u = c.uncond_or_null();
        const PickResult model = pick::pick_row_model(c.row.data(), u, 400, c.params, c.banned);
        std::vector<float> work = c.row;
        unmask::test::check_pick(model, pick_row(work.data(), u, 400, c.params, c.banned, scratch));
        const int32_t n = n_banned < 0 ? static_cast<int32_t>(c.banned.size()) : n_banned;
        if (variant == 0) CHECK((model.token == 7) == (first >= 1 || n == 0));
      }
    }
  }
}

TEST_CASE("cuda host: a row with every token banned has no winner") {
  const std::vector<float> row = {1.f, 2.f, 3.f};
  PickParams p;
  CHECK(pick::pick_row_model(row.data(), nullptr, 3, p, {0, 1, 2}).token == -1);
  CHECK(pick::pick_row_model(row.data(), nullptr, 3, p, {0, 2}).token == 1);
}

TEST_CASE("cuda host: a row holding NaN or an infinity is reported, by the kernel's model and the CPU") {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<int32_t> scratch;
  for (bool filtered : {false, true}) {
    PickParams p;
    p.filtered_confidence = filtered;
    p.temperature = filtered ? 0.5f : 0.f;
    for (const std::vector<float>& row : {std::vector<float>{1.f, nan, 3.f}, {1.f, inf, 3.f},
                                          {-inf, 2.f, 3.f}, {nan, nan, nan}}) {
      CAPTURE(filtered);
      const PickResult model = pick::pick_row_model(row.data(), nullptr, 3, p, {2});
      CHECK(!model.finite);
      CHECK(model.token == -1);
      std::vector<float> copy = row;
      const PickResult cpu = pick_row(copy.data(), nullptr, 3, p, {2}, scratch);
      CHECK(!cpu.finite);
      CHECK(cpu.token == -1);
    }
    // A banned token's -inf is the ban, not an overflow; CFG that overflows is caught.
    const std::vector<float> ok = {1.f, 2.f, 3.f};
    CHECK(pick::pick_row_model(ok.data(), nullptr, 3, p, {2}).finite);
    const std::vector<float> big = {3e38f, 0.f, 1.f}, small = {-3e38f, 0.f, 1.f};
    p.cfg_scale = 1.f;
    p.uncond_row = 0;
    CHECK(!pick::pick_row_model(big.data(), small.data(), 3, p, {}).finite);
    std::vector<float> big_copy = big;
    CHECK(!pick_row(big_copy.data(), small.data(), 3, p, {}, scratch).finite);
  }
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
    // An explicit --backend cuda fails with one runtime-error line; without a driver it says so
    // (the runtime's own "driver version is insufficient" would mislead).
    try {
      make_backend("cuda", 1);
      FAIL("make_backend(\"cuda\") succeeded without a usable device");
    } catch (const Error& e) {
      CHECK(e.exit_code() == kExitRuntime);
      CHECK(std::string(e.what()).find('\n') == std::string::npos);
      if (!nvidia_driver_present()) {
        CHECK(std::string(e.what()).find("no NVIDIA driver found") != std::string::npos);
        CHECK(std::string(e.what()).find("insufficient") == std::string::npos);
      }
    }
  }
#else
  CHECK(backend->name() == "cpu");
#endif
}

TEST_CASE("cuda host: step graphs are recorded on a key's second sighting and replayed after") {
  using unmask::cuda_plan::StepAction;
  std::vector<int> destroyed;
  unmask::cuda_plan::StepGraphCache<int> cache(2, [&](int& r) { destroyed.push_back(r); });
  CHECK(cache.next(7) == StepAction::Eager);    // first sighting: scratch may still grow
  CHECK(cache.next(7) == StepAction::Capture);  // second: record it
  cache.store(7, 70);
  CHECK(cache.next(7) == StepAction::Replay);
  CHECK(cache.recording(7) == 70);

  // Capacity 2: a third recording evicts the least recently used one.
  for (uint64_t key : {8, 8}) (void)cache.next(key);
  cache.store(8, 80);
  CHECK(cache.next(7) == StepAction::Replay);  // 7 is now the most recent
  for (uint64_t key : {9, 9}) (void)cache.next(key);
  cache.store(9, 90);
  CHECK(destroyed == std::vector<int>{80});
  CHECK(cache.size() == 2);
  CHECK(cache.next(8) == StepAction::Capture);  // seen before, recording gone: record again

  // A failed recording is never tried again for that key.
  CHECK(cache.next(10) == StepAction::Eager);
  CHECK(cache.next(10) == StepAction::Capture);
  cache.failed(10);
  CHECK(cache.next(10) == StepAction::Eager);
  CHECK(cache.next(10) == StepAction::Eager);

  // Buffers moved: every recording is destroyed and every key starts over, eagerly.
  cache.clear();
  CHECK(cache.size() == 0);
  CHECK(destroyed.size() == 3);
  CHECK(cache.next(7) == StepAction::Eager);
  CHECK(cache.next(7) == StepAction::Capture);

  // Capacity 0 (UNMASK_CUDA_GRAPHS=0): always eager.
  unmask::cuda_plan::StepGraphCache<int> off(0, [](int&) {});
  for (int i = 0; i < 3; i++) CHECK(off.next(1) == StepAction::Eager);
}

TEST_CASE("cuda host: the forward keys its layers by shape and buffers, so steps repeat") {
  // The CPU backend records nothing; the keys the model hands it must repeat for a request whose
  // canvas keeps its size, and differ when the batch changes shape.
  struct KeyLog : Backend {
    std::unique_ptr<Backend> cpu = make_cpu_backend(1);
    std::vector<uint64_t> keys;
    std::string name() const override { return "keylog"; }
    std::string device() const override { return "cpu"; }
    void* alloc(size_t n) override { return cpu->alloc(n); }
    void free(void* p) override { cpu->free(p); }
    Tensor upload_weight(const Tensor& t) override { return cpu->upload_weight(t); }
    void upload(void* d, const void* s, size_t n) override { cpu->upload(d, s, n); }
    void download(void* d, const void* s, size_t n) override { cpu->download(d, s, n); }
    void copy(void* d, const void* s, size_t n) override { cpu->copy(d, s, n); }
    size_t peak_bytes() const override { return cpu->peak_bytes(); }
    void reset_peak() override { cpu->reset_peak(); }
    Tensor random_weight(int64_t r, int64_t c, DType d, uint64_t s, float k) override {
      return cpu->random_weight(r, c, d, s, k);
    }
    void embed(const int32_t* i, const Tensor& t, Tensor& o) override { cpu->embed(i, t, o); }
    void rmsnorm(const Tensor& x, const Tensor& w, float e, Tensor& o) override { cpu->rmsnorm(x, w, e, o); }
    void matmul(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& o) override { cpu->matmul(x, w, b, o); }
    void rope(Tensor& x, const int32_t* p, int h, int rd, float t) override { cpu->rope(x, p, h, rd, t); }
    void attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionLayout& l, int h,
                   int kv, int d, Tensor& o) override {
      cpu->attention(q, k, v, l, h, kv, d, o);
    }
    void swiglu(const Tensor& g, const Tensor& u, Tensor& o) override { cpu->swiglu(g, u, o); }
    void add(Tensor& x, const Tensor& y) override { cpu->add(x, y); }
    void moe_route(const Tensor& l, const float* b, const MoeRouter& r, int32_t* i, float* w) override {
      cpu->moe_route(l, b, r, i, w);
    }
    void moe_experts(const Tensor& x, const int32_t* i, const float* w, int k, const ExpertWeights& e,
                     Tensor& o) override {
      cpu->moe_experts(x, i, w, k, e, o);
    }
    void gather_rows(const Tensor& x, const int32_t* r, Tensor& o) override { cpu->gather_rows(x, r, o); }
    void scatter_rows(const Tensor& x, const int32_t* r, Tensor& o) override { cpu->scatter_rows(x, r, o); }
    void pick(const Tensor& l, const Tensor* u, const PickParams* p, const std::vector<int32_t>& b,
              PickResult* o) override {
      cpu->pick(l, u, p, b, o);
    }
    bool replay_step(uint64_t key) override {
      keys.push_back(key);
      return false;
    }
  };
  KeyLog backend;
  const ModelConfig config = synthetic_spec("default").config;
  SyntheticModel model(backend, synthetic_spec("default"));
  GenerationSettings s;
  s.gen_length = 8;
  s.steps = 4;
  s.block_length = 8;
  s.eos_stop = false;
  Sampler one(random_prompt(config, 4, 1), s, config);
  Engine engine(model.model());
  engine.run({&one});
  REQUIRE(backend.keys.size() == 4);
  for (uint64_t key : backend.keys) CHECK(key == backend.keys[0]);  // the same canvas every step

  Sampler a(random_prompt(config, 4, 2), s, config), b(random_prompt(config, 6, 3), s, config);
  Engine pair(model.model());
  pair.run({&a, &b});
  CHECK(backend.keys.back() != backend.keys[0]);  // two canvases: another shape, another key
}

#if defined(UNMASK_GPU_TEST_BINARY)
TEST_CASE("cuda host: without a usable device the GPU tests report themselves skipped, not passed") {
  std::string why;
  if (cuda_device_usable(&why)) {
    MESSAGE("a device is present: the GPU tests run");
    return;
  }
  const std::string cmd = std::string(UNMASK_GPU_TEST_BINARY) + " > /dev/null 2>&1";
  const int status = std::system(cmd.c_str());
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 77);  // ctest's SKIP_RETURN_CODE for the gpu label
  // Listing the cases (ctest's discovery) still works.
  const std::string list = std::string(UNMASK_GPU_TEST_BINARY) + " --list-test-cases > /dev/null 2>&1";
  CHECK(std::system(list.c_str()) == 0);
}
#endif

// --- MoE: the routing kernel's model against the CPU backend, and the scratch plan.

TEST_CASE("cuda host: the routing kernel's model matches the CPU's moe_route") {
  auto cpu = make_cpu_backend(1);
  std::mt19937 gen(31);
  std::normal_distribution<float> normal(0.f, 2.f);
  struct Case {
    RouterScore score;
    int n_experts, top_k, n_group, topk_group;
    bool bias, bias_in_weights, renormalize;
    float scale;
  };
  const Case cases[] = {
      {RouterScore::Sigmoid, 256, 8, 8, 4, true, false, true, 2.5f},  // LLaDA2.0-mini
      {RouterScore::Sigmoid, 16, 3, 4, 2, true, false, true, 1.f},
      {RouterScore::Sigmoid, 32, 1, 4, 2, true, false, true, 2.f},
      {RouterScore::Sigmoid, 64, 4, 1, 1, false, false, true, 1.5f},
      {RouterScore::Softmax, 64, 8, 1, 1, false, false, false, 1.f},  // LLaDA-MoE
      {RouterScore::Softmax, 64, 8, 1, 1, true, true, false, 1.f},
      {RouterScore::Softmax, 8, 2, 1, 1, true, true, false, 1.f},
  };
  for (const Case& k : cases) {
    for (bool ties : {false, true}) {
      MoeRouter r;
      r.score = k.score;
      r.n_experts = k.n_experts;
      r.top_k = k.top_k;
      r.n_group = k.n_group;
      r.topk_group = k.topk_group;
      r.bias_in_weights = k.bias_in_weights;
      r.renormalize = k.renormalize;
      r.scale = k.scale;
      REQUIRE(moe::router_problem(r).empty());
      CAPTURE(k.n_experts);
      CAPTURE(k.top_k);
      CAPTURE(static_cast<int>(k.score));
      CAPTURE(ties);
      const int64_t rows = 9;
      const int E = k.n_experts;
      std::vector<float> logits(rows * E), bias(E);
      for (float& x : logits) x = ties ? std::round(normal(gen) * 2.f) / 2.f : normal(gen);
      for (float& x : bias) x = ties ? 0.125f : normal(gen) * 0.05f;
      Tensor l;
      l.rows = rows;
      l.cols = E;
      l.dtype = DType::F32;
      l.data = cpu->alloc(l.n_bytes());
      cpu->upload(l.data, logits.data(), l.n_bytes());
      auto* b = static_cast<float*>(cpu->alloc(E * sizeof(float)));
      cpu->upload(b, bias.data(), E * sizeof(float));
      auto* ids = static_cast<int32_t*>(cpu->alloc(rows * k.top_k * sizeof(int32_t)));
      auto* w = static_cast<float*>(cpu->alloc(rows * k.top_k * sizeof(float)));
      cpu->moe_route(l, k.bias ? b : nullptr, r, ids, w);
      for (int64_t row = 0; row < rows; row++) {
        CAPTURE(row);
        std::vector<int32_t> model_ids(k.top_k);
        std::vector<float> model_w(k.top_k);
        moe::route_row_model(logits.data() + row * E, k.bias ? bias.data() : nullptr, r, model_ids.data(),
                             model_w.data());
        // The same set (slot order is the backends' own), the same weights.
        std::vector<std::pair<int32_t, float>> want, got;
        for (int t = 0; t < k.top_k; t++) {
          want.emplace_back(ids[row * k.top_k + t], w[row * k.top_k + t]);
          got.emplace_back(model_ids[t], model_w[t]);
        }
        std::sort(want.begin(), want.end());
        std::sort(got.begin(), got.end());
        for (int t = 0; t < k.top_k; t++) {
          CHECK(got[t].first == want[t].first);
          CHECK(got[t].second == doctest::Approx(want[t].second).epsilon(1e-5));
        }
        // Distinct experts.
        std::vector<int32_t> sorted = model_ids;
        std::sort(sorted.begin(), sorted.end());
        CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
      }
      for (void* p : {l.data, static_cast<void*>(b), static_cast<void*>(ids), static_cast<void*>(w)}) cpu->free(p);
    }
  }
}

TEST_CASE("cuda host: the routing model follows LLaDA2's group rule and the tie order") {
  // 8 experts in 4 groups of 2, keep 2 groups, top 2. Group sums: g0 = 0.9 + 0.1 = 1.0,
  // g1 = 0.6 + 0.6, g2 = 0.95 + ~0, g3 = 0.6 + 0.6. g1 and g3 (1.2) are kept although g2 holds the
  // best single expert; among experts 2, 3, 6, 7 (all 0.6) the two lowest indices win.
  MoeRouter r;
  r.score = RouterScore::Sigmoid;
  r.n_experts = 8;
  r.top_k = 2;
  r.n_group = 4;
  r.topk_group = 2;
  r.renormalize = true;
  r.scale = 2.f;
  auto logit = [](float p) { return std::log(p / (1.f - p)); };
  const float zero_ish = 1e-6f;
  std::vector<float> logits = {logit(0.9f), logit(0.1f), logit(0.6f), logit(0.6f),
                               logit(0.95f), logit(zero_ish), logit(0.6f), logit(0.6f)};
  std::vector<int32_t> ids(2);
  std::vector<float> w(2);
  moe::route_row_model(logits.data(), nullptr, r, ids.data(), w.data());
  CHECK(ids == std::vector<int32_t>{2, 3});
  CHECK(w[0] == doctest::Approx(1.f));  // 0.6 / 1.2 * 2
  CHECK(w[1] == doctest::Approx(1.f));
  // A bias steers the selection but not the weights: +0.5 on expert 4 lifts group 2 to 1.45, which
  // is kept with g1 (the lower index of the 1.2 tie); expert 2 beats its tie 3.
  std::vector<float> bias(8, 0.f);
  bias[4] = 0.5f;
  moe::route_row_model(logits.data(), bias.data(), r, ids.data(), w.data());
  CHECK(ids == std::vector<int32_t>{4, 2});
  CHECK(w[0] == doctest::Approx(0.95f / (0.95f + 0.6f) * 2.f));
  // Routers the kernel cannot run are refused with a reason.
  r.n_group = 3;
  CHECK(!moe::router_problem(r).empty());
  r.n_group = 8;  // groups of one: no top-2 sum
  CHECK(!moe::router_problem(r).empty());
  r.n_group = 4;
  r.top_k = 5;  // more than the kept groups hold
  CHECK(!moe::router_problem(r).empty());
}

TEST_CASE("cuda host: the MoE scratch plan holds every array and bounds the row tiles") {
  std::mt19937 gen(32);
  for (int64_t rows : {1, 7, 64, 65, 1000}) {
    for (int n_experts : {1, 8, 256}) {
      for (int top_k : {1, 2, 8}) {
        if (top_k > n_experts) continue;
        CAPTURE(rows);
        CAPTURE(n_experts);
        CAPTURE(top_k);
        const plan::MoePlan p = plan::moe_plan(rows, top_k, n_experts, 72, 40);
        const size_t a = static_cast<size_t>(rows * top_k), t = static_cast<size_t>(p.max_tiles);
        // In order, 256-aligned, none overlapping the next.
        const std::vector<std::pair<size_t, size_t>> regions = {
            {p.offsets, (n_experts + 1) * 4}, {p.perm, a * 4},          {p.tile_expert, t * 4},
            {p.tile_row, t * 4},             {p.n_tiles, 4},           {p.hidden, a * 40 * 4},
            {p.y, a * 72 * 4}};
        for (size_t i = 0; i < regions.size(); i++) {
          CHECK(regions[i].first % 256 == 0);
          const size_t end = regions[i].first + regions[i].second;
          CHECK(end <= (i + 1 < regions.size() ? regions[i + 1].first : p.bytes));
        }
        // However the assignments fall, the tiles fit the bound (the GEMM grids cover it).
        for (int trial = 0; trial < 20; trial++) {
          std::vector<int64_t> count(n_experts, 0);
          const int spread = trial % 2 ? n_experts : std::max(1, n_experts / 7);
          for (size_t i = 0; i < a; i++) count[gen() % spread]++;
          int64_t tiles = 0;
          for (int64_t c : count) tiles += (c + plan::kMoeTileRows - 1) / plan::kMoeTileRows;
          CHECK(tiles <= p.max_tiles);
        }
      }
    }
  }
}

TEST_CASE("cuda host: long MoE batches go through in chunks whose intermediates fit the budget") {
  // LLaDA2.0-mini (d 2048, M 512, k 8) and LLaDA-MoE (d 2048, M 1024, k 8).
  for (int64_t hidden : {512, 1024}) {
    const int64_t per_row = 8 * (hidden + 2048) * 4;
    CHECK(plan::moe_chunk_rows(100, 8, 2048, hidden) == 100);  // a decode step: one pass
    const int64_t chunk = plan::moe_chunk_rows(1 << 16, 8, 2048, hidden);
    CAPTURE(chunk);
    CHECK(chunk >= 1000);
    CHECK(static_cast<size_t>(chunk * per_row) <= plan::kMoeScratchBudget);
    CHECK(static_cast<size_t>((chunk + 1) * per_row) > plan::kMoeScratchBudget);
  }
  // A row bigger than the budget still makes progress.
  CHECK(plan::moe_chunk_rows(10, 32, 1 << 20, 1 << 20) == 1);
}
