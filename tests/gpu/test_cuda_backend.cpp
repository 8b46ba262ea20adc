// Every CUDA backend op against the CPU backend on random data and odd shapes; skips without a GPU.
#include <doctest/doctest.h>

#include <numeric>

#include "common.h"
#include "gpu_test.h"

using namespace unmask;
using namespace unmask::gpu_test;

namespace {
constexpr double kF32Tol = 1e-5;
constexpr double kHalfTol = 1e-2;
}  // namespace

TEST_CASE("cuda: device description and memory accounting") {
  UNMASK_REQUIRE_CUDA();
  auto gpu = make_cuda_backend();
  CHECK(gpu->name() == "cuda");
  MESSAGE("device: " << gpu->device());
  const size_t base = gpu->peak_bytes();
  void* p = gpu->alloc(10 << 20);
  CHECK(gpu->peak_bytes() >= base + (10 << 20));
  gpu->free(p);
  void* q = gpu->alloc(5 << 20);  // below the high-water mark: peak unchanged
  CHECK(gpu->peak_bytes() >= base + (10 << 20));
  gpu->free(q);
  // Out of memory is a one-line runtime error, and the backend stays usable.
  try {
    gpu->alloc(size_t{1} << 52);
    FAIL("a 4 PiB allocation succeeded");
  } catch (const Error& e) {
    CHECK(e.exit_code() == kExitRuntime);
    CHECK(std::string(e.what()).find("out of device memory") != std::string::npos);
  }
  std::vector<float> host = {1.f, 2.f, 3.f}, back(3);
  void* d = gpu->alloc(12);
  gpu->upload(d, host.data(), 12);
  gpu->download(back.data(), d, 12);
  CHECK(back == host);
}

TEST_CASE("cuda: random_weight is bit-identical to the CPU's") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
    CAPTURE(dtype_name(dtype));
    const Tensor c = b.cpu->random_weight(33, 72, dtype, 1234, 0.05f);
    const Tensor g = b.gpu->random_weight(33, 72, dtype, 1234, 0.05f);
    std::vector<char> got(g.n_bytes());
    b.gpu->download(got.data(), g.data, got.size());
    CHECK(std::memcmp(got.data(), c.data, got.size()) == 0);
  }
}

TEST_CASE("cuda: embed widens every dtype exactly") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  std::mt19937 gen(1);
  for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
    for (int64_t rows : {1, 7, 33}) {
      CAPTURE(dtype_name(dtype));
      CAPTURE(rows);
      const int64_t vocab = 50, d = 72;
      Twin table = make_twin(b, vocab, d, random_values(gen, vocab * d), dtype);
      std::vector<int32_t> ids(rows);
      for (auto& id : ids) id = static_cast<int32_t>(gen() % vocab);
      IntTwin dids = make_ints(b, ids);
      Twin out = make_zeros(b, rows, d);
      b.cpu->embed(dids.cpu, table.cpu, out.cpu);
      b.gpu->embed(dids.gpu, table.gpu, out.gpu);
      CHECK(twin_error(b, out) == 0.0);
    }
  }
}

TEST_CASE("cuda: a bad token id becomes an error at the next sync") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  std::mt19937 gen(2);
  Twin table = make_twin(b, 10, 8, random_values(gen, 80));
  IntTwin ids = make_ints(b, {3, 10});
  Twin out = make_zeros(b, 2, 8);
  b.gpu->embed(ids.gpu, table.gpu, out.gpu);
  CHECK_THROWS_AS(b.gpu->synchronize(), Error);
  b.gpu->synchronize();  // the flag was cleared: the backend goes on
}

TEST_CASE("cuda: rmsnorm") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  std::mt19937 gen(3);
  for (DType dtype : {DType::F32, DType::BF16}) {
    for (int64_t rows : {1, 7, 33}) {
      for (int64_t d : {24, 72, 4096}) {
        CAPTURE(dtype_name(dtype));
        CAPTURE(rows);
        CAPTURE(d);
        Twin x = make_twin(b, rows, d, random_values(gen, rows * d, 3.f));
        Twin w = make_twin(b, 1, d, random_values(gen, d), dtype);
        Twin out = make_zeros(b, rows, d);
        b.cpu->rmsnorm(x.cpu, w.cpu, 1e-5f, out.cpu);
        b.gpu->rmsnorm(x.gpu, w.gpu, 1e-5f, out.gpu);
        CHECK(twin_error(b, out) <= kF32Tol);
        // In place, as the forward pass does for the final norm.
        b.cpu->rmsnorm(x.cpu, w.cpu, 1e-6f, x.cpu);
        b.gpu->rmsnorm(x.gpu, w.gpu, 1e-6f, x.gpu);
        CHECK(twin_error(b, x) <= kF32Tol);
      }
    }
  }
}

TEST_CASE("cuda: matmul in f32, bf16 and f16, with and without bias") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  std::mt19937 gen(4);
  struct Shape { int64_t n, k, m; };
  for (const Shape s : {Shape{1, 72, 24}, Shape{7, 72, 216}, Shape{33, 256, 1000}, Shape{5, 48, 400}}) {
    for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
      for (bool with_bias : {false, true}) {
        CAPTURE(s.n);
        CAPTURE(s.k);
        CAPTURE(s.m);
        CAPTURE(dtype_name(dtype));
        CAPTURE(with_bias);
        Twin x = make_twin(b, s.n, s.k, random_values(gen, s.n * s.k));
        Twin w = make_twin(b, s.m, s.k, random_values(gen, s.m * s.k, 0.1f), dtype);
        Twin bias = make_twin(b, 1, s.m, random_values(gen, s.m), dtype);
        Twin out = make_zeros(b, s.n, s.m);
        b.cpu->matmul(x.cpu, w.cpu, with_bias ? &bias.cpu : nullptr, out.cpu);
        b.gpu->matmul(x.gpu, w.gpu, with_bias ? &bias.gpu : nullptr, out.gpu);
        CHECK(twin_error(b, out) <= (dtype == DType::F32 ? kF32Tol : kHalfTol));
      }
    }
  }
}

TEST_CASE("cuda: rope") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  std::mt19937 gen(5);
  struct Shape { int64_t rows; int heads, head_dim; float theta; };
  for (const Shape s : {Shape{1, 3, 24, 10000.f}, Shape{7, 4, 16, 10000.f}, Shape{33, 3, 24, 500000.f},
                        Shape{33, 2, 128, 10000.f}}) {
    CAPTURE(s.rows);
    CAPTURE(s.head_dim);
    const int64_t cols = int64_t{s.heads} * s.head_dim;
    Twin x = make_twin(b, s.rows, cols, random_values(gen, s.rows * cols));
    std::vector<int32_t> pos(s.rows);
    for (auto& p : pos) p = static_cast<int32_t>(gen() % 4096);
    IntTwin dpos = make_ints(b, pos);
    b.cpu->rope(x.cpu, dpos.cpu, s.head_dim, s.theta);
    b.gpu->rope(x.gpu, dpos.gpu, s.head_dim, s.theta);
    CHECK(twin_error(b, x) <= kF32Tol);
  }
}

TEST_CASE("cuda: attention over ragged batches with GQA") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  std::mt19937 gen(6);
  struct Heads { int n_heads, n_kv_heads, head_dim; };
  const std::vector<std::vector<int32_t>> layouts = {{7}, {1, 33}, {5, 1, 70, 12, 33}, {130}};
  for (const Heads h : {Heads{3, 3, 24}, Heads{4, 2, 16}, Heads{8, 2, 64}, Heads{3, 1, 72},
                        Heads{4, 1, 128}, Heads{2, 2, 256}}) {
    for (const auto& lengths : layouts) {
      CAPTURE(h.n_heads);
      CAPTURE(h.n_kv_heads);
      CAPTURE(h.head_dim);
      CAPTURE(lengths.size());
      std::vector<int32_t> start = {0};
      for (int32_t len : lengths) start.push_back(start.back() + len);
      const int64_t n = start.back();
      const int64_t q_dim = int64_t{h.n_heads} * h.head_dim, kv_dim = int64_t{h.n_kv_heads} * h.head_dim;
      Twin q = make_twin(b, n, q_dim, random_values(gen, n * q_dim));
      Twin k = make_twin(b, n, kv_dim, random_values(gen, n * kv_dim));
      Twin v = make_twin(b, n, kv_dim, random_values(gen, n * kv_dim));
      Twin out = make_zeros(b, n, q_dim);
      IntTwin dstart = make_ints(b, start);
      AttentionLayout lc, lg;
      lc.n_seqs = lg.n_seqs = static_cast<int32_t>(lengths.size());
      lc.max_q_len = lg.max_q_len = *std::max_element(lengths.begin(), lengths.end());
      lc.max_kv_len = lg.max_kv_len = lc.max_q_len;
      lc.q_start = lc.kv_start = dstart.cpu;
      lg.q_start = lg.kv_start = dstart.gpu;
      b.cpu->attention(q.cpu, k.cpu, v.cpu, lc, h.n_heads, h.n_kv_heads, h.head_dim, out.cpu);
      b.gpu->attention(q.gpu, k.gpu, v.gpu, lg, h.n_heads, h.n_kv_heads, h.head_dim, out.gpu);
      CHECK(twin_error(b, out) <= kF32Tol);
    }
  }
}

TEST_CASE("cuda: swiglu, add and gather_rows") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  std::mt19937 gen(7);
  for (int64_t rows : {1, 7, 33}) {
    const int64_t cols = 72;
    CAPTURE(rows);
    Twin gate = make_twin(b, rows, cols, random_values(gen, rows * cols, 4.f));
    Twin up = make_twin(b, rows, cols, random_values(gen, rows * cols));
    Twin out = make_zeros(b, rows, cols);
    b.cpu->swiglu(gate.cpu, up.cpu, out.cpu);
    b.gpu->swiglu(gate.gpu, up.gpu, out.gpu);
    CHECK(twin_error(b, out) <= kF32Tol);
    b.cpu->swiglu(gate.cpu, up.cpu, gate.cpu);  // in place, as the forward pass does
    b.gpu->swiglu(gate.gpu, up.gpu, gate.gpu);
    CHECK(twin_error(b, gate) <= kF32Tol);

    b.cpu->add(up.cpu, out.cpu);
    b.gpu->add(up.gpu, out.gpu);
    CHECK(twin_error(b, up) == 0.0);

    std::vector<int32_t> pick(std::max<int64_t>(rows / 2, 1));
    for (auto& r : pick) r = static_cast<int32_t>(gen() % rows);
    IntTwin dpick = make_ints(b, pick);
    Twin gathered = make_zeros(b, static_cast<int64_t>(pick.size()), cols);
    b.cpu->gather_rows(up.cpu, dpick.cpu, gathered.cpu);
    b.gpu->gather_rows(up.gpu, dpick.gpu, gathered.gpu);
    CHECK(twin_error(b, gathered) == 0.0);
  }
}

TEST_CASE("cuda: scatter_rows into a cache and attention over per-sequence cache slots") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  std::mt19937 gen(9);
  const int n_heads = 4, n_kv_heads = 2, head_dim = 32;
  const int64_t q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim;
  // Two requests in slots of 64 rows: canvases of 40 and 25 positions; this step recomputes
  // positions [8, 16) of the first and [20, 25) of the second.
  const int64_t slot = 64, cache_rows = 2 * slot;
  Twin cache_k = make_twin(b, cache_rows, kv_dim, random_values(gen, cache_rows * kv_dim));
  Twin cache_v = make_twin(b, cache_rows, kv_dim, random_values(gen, cache_rows * kv_dim));
  std::vector<int32_t> rows;
  for (int32_t p = 8; p < 16; p++) rows.push_back(p);
  for (int32_t p = 20; p < 25; p++) rows.push_back(static_cast<int32_t>(slot) + p);
  const int64_t n = static_cast<int64_t>(rows.size());
  Twin fresh_k = make_twin(b, n, kv_dim, random_values(gen, n * kv_dim));
  Twin fresh_v = make_twin(b, n, kv_dim, random_values(gen, n * kv_dim));
  IntTwin drows = make_ints(b, rows);
  b.cpu->scatter_rows(fresh_k.cpu, drows.cpu, cache_k.cpu);
  b.gpu->scatter_rows(fresh_k.gpu, drows.gpu, cache_k.gpu);
  b.cpu->scatter_rows(fresh_v.cpu, drows.cpu, cache_v.cpu);
  b.gpu->scatter_rows(fresh_v.gpu, drows.gpu, cache_v.gpu);
  CHECK(twin_error(b, cache_k) == 0.0);
  CHECK(twin_error(b, cache_v) == 0.0);

  Twin q = make_twin(b, n, q_dim, random_values(gen, n * q_dim));
  Twin out = make_zeros(b, n, q_dim);
  IntTwin q_start = make_ints(b, {0, 8, 13});
  IntTwin kv_begin = make_ints(b, {0, static_cast<int32_t>(slot)});
  IntTwin kv_end = make_ints(b, {40, static_cast<int32_t>(slot) + 25});
  AttentionLayout lc, lg;
  lc.n_seqs = lg.n_seqs = 2;
  lc.max_q_len = lg.max_q_len = 8;
  lc.max_kv_len = lg.max_kv_len = 40;
  lc.q_start = q_start.cpu;
  lg.q_start = q_start.gpu;
  lc.kv_start = kv_begin.cpu;
  lg.kv_start = kv_begin.gpu;
  lc.kv_end = kv_end.cpu;
  lg.kv_end = kv_end.gpu;
  b.cpu->attention(q.cpu, cache_k.cpu, cache_v.cpu, lc, n_heads, n_kv_heads, head_dim, out.cpu);
  b.gpu->attention(q.gpu, cache_k.gpu, cache_v.gpu, lg, n_heads, n_kv_heads, head_dim, out.gpu);
  CHECK(twin_error(b, out) <= kF32Tol);
}
