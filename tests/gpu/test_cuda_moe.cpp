// The CUDA MoE ops against the CPU backend and the routing model: moe_route for both router kinds
// (groups, bias, ties), moe_experts for every weight dtype (empty experts, experts spanning several
// row tiles, bad ids), and both inside a recorded step. Skips without a GPU.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "common.h"
#include "cuda/moe_select.h"
#include "gpu_test.h"

using namespace unmask;
using namespace unmask::gpu_test;

namespace {

constexpr double kF32Tol = 1e-5;
constexpr double kHalfTol = 1e-2;

std::vector<int32_t> fetch_ints(Backend& backend, const int32_t* p, size_t n) {
  std::vector<int32_t> out(n);
  backend.download(out.data(), p, n * sizeof(int32_t));
  return out;
}

// One row's (id, weight) pairs ordered by id: the interface fixes the chosen set, not slot order.
std::vector<std::pair<int32_t, float>> by_id(const std::vector<int32_t>& ids, const std::vector<float>& w,
                                             int64_t row, int top_k) {
  std::vector<std::pair<int32_t, float>> out;
  for (int t = 0; t < top_k; t++) out.emplace_back(ids[row * top_k + t], w[row * top_k + t]);
  std::sort(out.begin(), out.end());
  return out;
}

struct RouterCase {
  const char* name;
  MoeRouter router;
  bool bias;
  bool ties;  // logits on a coarse grid and one bias for all: exact ties at every boundary
};

MoeRouter router_of(RouterScore score, int n_experts, int top_k, int n_group, int topk_group,
                    bool bias_in_weights, bool renormalize, float scale) {
  MoeRouter r;
  r.score = score;
  r.n_experts = n_experts;
  r.top_k = top_k;
  r.n_group = n_group;
  r.topk_group = topk_group;
  r.bias_in_weights = bias_in_weights;
  r.renormalize = renormalize;
  r.scale = scale;
  return r;
}

}  // namespace

TEST_CASE("cuda: moe_route matches the CPU and the routing model") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  std::mt19937 gen(21);
  const RouterScore sig = RouterScore::Sigmoid, soft = RouterScore::Softmax;
  const std::vector<RouterCase> cases = {
      // LLaDA2.0-mini's router, with and without ties.
      {"llada2", router_of(sig, 256, 8, 8, 4, false, true, 2.5f), true, false},
      {"llada2 ties", router_of(sig, 256, 8, 8, 4, false, true, 2.5f), true, true},
      {"sigmoid small groups", router_of(sig, 16, 3, 4, 2, false, true, 1.f), true, false},
      {"sigmoid small groups ties", router_of(sig, 16, 3, 4, 2, false, true, 1.f), true, true},
      {"sigmoid no groups", router_of(sig, 64, 4, 1, 1, false, true, 1.5f), false, false},
      {"sigmoid top-1", router_of(sig, 32, 1, 4, 2, false, true, 2.f), true, false},
      // LLaDA-MoE's router: softmax, no renormalisation; bias (when present) in the weights.
      {"lladamoe", router_of(soft, 64, 8, 1, 1, false, false, 1.f), false, false},
      {"lladamoe ties", router_of(soft, 64, 8, 1, 1, false, false, 1.f), false, true},
      {"softmax bias", router_of(soft, 64, 8, 1, 1, true, false, 1.f), true, false},
      {"softmax bias ties", router_of(soft, 8, 2, 1, 1, true, false, 1.f), true, true},
  };
  for (const RouterCase& c : cases) {
    for (int64_t rows : {1, 7, 33}) {
      CAPTURE(c.name);
      CAPTURE(rows);
      const MoeRouter& r = c.router;
      const int E = r.n_experts, k = r.top_k;
      std::vector<float> logits = random_values(gen, rows * E, 2.f), bias = random_values(gen, E, 0.1f);
      if (c.ties) {
        for (float& x : logits) x = std::round(x * 2.f) / 2.f;
        std::fill(bias.begin(), bias.end(), 0.125f);
      }
      Twin l = make_twin(b, rows, E, logits);
      Twin bias_t = make_twin(b, 1, E, bias);
      const float* bias_cpu = c.bias ? bias_t.cpu.f32() : nullptr;
      const float* bias_gpu = c.bias ? bias_t.gpu.f32() : nullptr;
      IntTwin ids = make_ints(b, std::vector<int32_t>(rows * k, -1));
      Twin weights = make_zeros(b, rows, k);
      b.cpu->moe_route(l.cpu, bias_cpu, r, ids.cpu, weights.cpu.f32());
      b.gpu->moe_route(l.gpu, bias_gpu, r, ids.gpu, weights.gpu.f32());
      const std::vector<int32_t> cpu_ids = fetch_ints(*b.cpu, ids.cpu, rows * k);
      const std::vector<int32_t> gpu_ids = fetch_ints(*b.gpu, ids.gpu, rows * k);
      const std::vector<float> cpu_w = fetch(*b.cpu, weights.cpu), gpu_w = fetch(*b.gpu, weights.gpu);
      for (int64_t row = 0; row < rows; row++) {
        CAPTURE(row);
        // The model: the same choices in the same slot order.
        std::vector<int32_t> model_ids(k);
        std::vector<float> model_w(k);
        moe::route_row_model(logits.data() + row * E, c.bias ? bias.data() : nullptr, r, model_ids.data(),
                             model_w.data());
        for (int t = 0; t < k; t++) {
          CHECK(gpu_ids[row * k + t] == model_ids[t]);
          CHECK(gpu_w[row * k + t] == doctest::Approx(model_w[t]).epsilon(kF32Tol));
        }
        // The CPU: the same set of experts and weights.
        const auto want = by_id(cpu_ids, cpu_w, row, k), got = by_id(gpu_ids, gpu_w, row, k);
        for (int t = 0; t < k; t++) {
          CHECK(got[t].first == want[t].first);
          CHECK(got[t].second == doctest::Approx(want[t].second).epsilon(kF32Tol));
        }
      }
    }
  }
}

namespace {

// A layer of experts on both backends plus routed rows.
struct MoeCase {
  std::vector<Twin> gate, up, down;
  ExpertWeights cpu, gpu;
  Twin x, out;
  IntTwin ids;
  Twin weights;
  std::vector<int32_t> host_ids;
};

// Rows choose top_k distinct experts among the first `used` (the rest stay empty); `skew`: every
// row takes expert 0 first, so it spans several row tiles when rows > 64.
MoeCase make_moe(Backends& b, std::mt19937& gen, int64_t rows, int n_experts, int used, int top_k, int64_t d,
                 int64_t hidden, DType dtype, bool skew) {
  MoeCase c;
  for (int e = 0; e < n_experts; e++) {
    c.gate.push_back(make_twin(b, hidden, d, random_values(gen, hidden * d, 0.2f), dtype));
    c.up.push_back(make_twin(b, hidden, d, random_values(gen, hidden * d, 0.2f), dtype));
    c.down.push_back(make_twin(b, d, hidden, random_values(gen, d * hidden, 0.2f), dtype));
    c.cpu.gate.push_back(c.gate.back().cpu);
    c.cpu.up.push_back(c.up.back().cpu);
    c.cpu.down.push_back(c.down.back().cpu);
    c.gpu.gate.push_back(c.gate.back().gpu);
    c.gpu.up.push_back(c.up.back().gpu);
    c.gpu.down.push_back(c.down.back().gpu);
  }
  c.x = make_twin(b, rows, d, random_values(gen, rows * d));
  // Overwritten, never read: NaN would show through otherwise.
  c.out = make_twin(b, rows, d, std::vector<float>(rows * d, std::numeric_limits<float>::quiet_NaN()));
  std::vector<float> w;
  for (int64_t r = 0; r < rows; r++) {
    std::vector<int32_t> order(used);
    for (int e = 0; e < used; e++) order[e] = e;
    std::shuffle(order.begin(), order.end(), gen);
    if (skew) std::iter_swap(order.begin(), std::find(order.begin(), order.end(), 0));
    for (int t = 0; t < top_k; t++) {
      c.host_ids.push_back(order[t]);
      w.push_back(0.1f + static_cast<float>(gen() % 1000) / 1000.f);
    }
  }
  c.ids = make_ints(b, c.host_ids);
  c.weights = make_twin(b, rows, top_k, w);
  return c;
}

void run_moe(Backends& b, MoeCase& c, int top_k) {
  b.cpu->moe_experts(c.x.cpu, c.ids.cpu, c.weights.cpu.f32(), top_k, c.cpu, c.out.cpu);
  b.gpu->moe_experts(c.x.gpu, c.ids.gpu, c.weights.gpu.f32(), top_k, c.gpu, c.out.gpu);
}

}  // namespace

TEST_CASE("cuda: moe_experts matches the CPU for every weight dtype") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  std::mt19937 gen(22);
  struct Shape {
    int64_t rows;
    int n_experts, used, top_k;
    int64_t d, hidden;
    bool skew;
  };
  for (const Shape s : {Shape{1, 4, 4, 1, 24, 16, false}, Shape{7, 8, 6, 2, 72, 40, false},
                        Shape{70, 8, 5, 2, 72, 40, true}, Shape{33, 64, 40, 8, 128, 96, false},
                        Shape{150, 16, 12, 4, 136, 72, true}}) {
    for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
      CAPTURE(s.rows);
      CAPTURE(s.n_experts);
      CAPTURE(s.top_k);
      CAPTURE(s.d);
      CAPTURE(s.hidden);
      CAPTURE(dtype_name(dtype));
      MoeCase c = make_moe(b, gen, s.rows, s.n_experts, s.used, s.top_k, s.d, s.hidden, dtype, s.skew);
      run_moe(b, c, s.top_k);
      CHECK(twin_error(b, c.out) <= (dtype == DType::F32 ? kF32Tol : kHalfTol));
      // Again, with the weight table cached: the same bits (no atomics in the result).
      const std::vector<float> first = fetch(*b.gpu, c.out.gpu);
      b.gpu->moe_experts(c.x.gpu, c.ids.gpu, c.weights.gpu.f32(), s.top_k, c.gpu, c.out.gpu);
      const std::vector<float> second = fetch(*b.gpu, c.out.gpu);
      CHECK(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("cuda: a bad expert id becomes an error at the next sync") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  std::mt19937 gen(23);
  MoeCase c = make_moe(b, gen, 2, 4, 4, 1, 16, 8, DType::F32, false);
  IntTwin bad = make_ints(b, {1, 4});
  b.gpu->moe_experts(c.x.gpu, bad.gpu, c.weights.gpu.f32(), 1, c.gpu, c.out.gpu);
  CHECK_THROWS_AS(b.gpu->synchronize(), Error);
  b.gpu->synchronize();  // the flag was cleared: the backend goes on
}

TEST_CASE("cuda: moe_route and moe_experts record into a step and replay") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  std::mt19937 gen(24);
  const int64_t rows = 40, d = 64, hidden = 32;
  const MoeRouter router = router_of(RouterScore::Sigmoid, 16, 4, 4, 2, false, true, 2.5f);
  MoeCase c = make_moe(b, gen, rows, router.n_experts, router.n_experts, router.top_k, d, hidden, DType::BF16,
                       false);
  Twin logits = make_twin(b, rows, router.n_experts, random_values(gen, rows * router.n_experts));
  Twin bias = make_twin(b, 1, router.n_experts, random_values(gen, router.n_experts, 0.1f));
  auto ops = [&] {
    b.gpu->moe_route(logits.gpu, bias.gpu.f32(), router, c.ids.gpu, c.weights.gpu.f32());
    b.gpu->moe_experts(c.x.gpu, c.ids.gpu, c.weights.gpu.f32(), router.top_k, c.gpu, c.out.gpu);
  };
  std::vector<std::vector<float>> outs;
  const uint64_t key = 0x3e0e;
  for (int step = 0; step < 4; step++) {
    // Reset the output, so a replay that did nothing would show.
    const std::vector<float> nan(rows * d, std::numeric_limits<float>::quiet_NaN());
    b.gpu->upload(c.out.gpu.data, nan.data(), nan.size() * sizeof(float));
    if (!b.gpu->replay_step(key)) {
      const bool recording = b.gpu->begin_step(key);
      ops();
      if (recording && !b.gpu->end_step(key)) ops();
    }
    outs.push_back(fetch(*b.gpu, c.out.gpu));
  }
  const char* graphs = std::getenv("UNMASK_CUDA_GRAPHS");
  if (!graphs || std::string(graphs) != "0") CHECK(b.gpu->replayed_steps() >= 2);  // 0: always eager
  for (const auto& o : outs) CHECK(std::memcmp(o.data(), outs[0].data(), o.size() * sizeof(float)) == 0);
  // And the CPU agrees.
  b.cpu->moe_route(logits.cpu, bias.cpu.f32(), router, c.ids.cpu, c.weights.cpu.f32());
  b.cpu->moe_experts(c.x.cpu, c.ids.cpu, c.weights.cpu.f32(), router.top_k, c.cpu, c.out.cpu);
  CHECK(rel_error(outs[0], fetch(*b.cpu, c.out.cpu)) <= kHalfTol);
}
