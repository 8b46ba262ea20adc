// Every CUDA backend op against the CPU backend on random data and odd shapes; skips without a GPU.
#include <doctest/doctest.h>

#include <cstring>
#include <limits>
#include <numeric>

#include "../fixture_cases.h"
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

TEST_CASE("cuda: rope, full and partial") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  std::mt19937 gen(5);
  struct Shape { int64_t rows; int heads, head_dim, rotary_dim; float theta; };
  for (const Shape s : {Shape{1, 3, 24, 24, 10000.f}, Shape{7, 4, 16, 16, 10000.f},
                        Shape{33, 3, 24, 24, 500000.f}, Shape{33, 2, 128, 128, 10000.f},
                        // partial: LLaDA2's rd = hd / 2, odd pair counts, the smallest rotary_dim
                        Shape{33, 4, 128, 64, 600000.f}, Shape{7, 3, 24, 12, 10000.f},
                        Shape{5, 2, 16, 6, 10000.f}, Shape{3, 2, 8, 2, 10000.f}}) {
    CAPTURE(s.rows);
    CAPTURE(s.head_dim);
    CAPTURE(s.rotary_dim);
    const int64_t cols = int64_t{s.heads} * s.head_dim;
    const std::vector<float> before = random_values(gen, s.rows * cols);
    Twin x = make_twin(b, s.rows, cols, before);
    std::vector<int32_t> pos(s.rows);
    for (auto& p : pos) p = static_cast<int32_t>(gen() % 4096);
    IntTwin dpos = make_ints(b, pos);
    b.cpu->rope(x.cpu, dpos.cpu, s.head_dim, s.rotary_dim, s.theta);
    b.gpu->rope(x.gpu, dpos.gpu, s.head_dim, s.rotary_dim, s.theta);
    CHECK(twin_error(b, x) <= kF32Tol);
    // Dimensions past rotary_dim pass through bit for bit.
    const std::vector<float> after = fetch(*b.gpu, x.gpu);
    size_t unchanged = 0, tail = 0;
    for (int64_t r = 0; r < s.rows; r++)
      for (int64_t c = 0; c < cols; c++)
        if (c % s.head_dim >= s.rotary_dim) {
          tail++;
          unchanged += std::memcmp(&after[r * cols + c], &before[r * cols + c], sizeof(float)) == 0;
        }
    CHECK(unchanged == tail);
  }
}

TEST_CASE("cuda: rope with rotary_dim == head_dim is full RoPE, bit for bit") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  std::mt19937 gen(15);
  const int64_t rows = 17, heads = 2, head_dim = 64, cols = heads * head_dim;
  const std::vector<float> values = random_values(gen, rows * cols);
  std::vector<int32_t> pos(rows);
  for (auto& p : pos) p = static_cast<int32_t>(gen() % 4096);
  IntTwin dpos = make_ints(b, pos);
  // A head of 64 rotated in full equals the first 64 dimensions of a head of 128 rotated with
  // rotary_dim 64: the same pairs and frequencies.
  Twin full = make_twin(b, rows, cols, values);
  b.gpu->rope(full.gpu, dpos.gpu, head_dim, head_dim, 10000.f);
  std::vector<float> wide_values(static_cast<size_t>(rows * heads * 2 * head_dim), 0.f);
  for (int64_t r = 0; r < rows; r++)
    for (int64_t h = 0; h < heads; h++)
      for (int64_t d = 0; d < head_dim; d++)
        wide_values[(r * heads + h) * 2 * head_dim + d] = values[(r * heads + h) * head_dim + d];
  Twin wide = make_twin(b, rows, cols * 2, wide_values);
  b.gpu->rope(wide.gpu, dpos.gpu, 2 * head_dim, head_dim, 10000.f);
  const std::vector<float> got_full = fetch(*b.gpu, full.gpu), got_wide = fetch(*b.gpu, wide.gpu);
  size_t same = 0;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t h = 0; h < heads; h++)
      for (int64_t d = 0; d < head_dim; d++)
        same += got_full[(r * heads + h) * head_dim + d] == got_wide[(r * heads + h) * 2 * head_dim + d];
  CHECK(same == static_cast<size_t>(rows * heads * head_dim));
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

namespace {

// A ragged attention problem on both backends: q [nq, H*hd], k/v [nk, K*hd], out [nq, H*hd].
struct AttentionCase {
  Twin q, k, v, out;
  IntTwin q_start, kv_start, kv_end, positions;
  AttentionLayout cpu, gpu;
};

AttentionCase make_attention(Backends& b, std::mt19937& gen, int n_heads, int n_kv_heads, int head_dim,
                             const std::vector<int32_t>& q_start, const std::vector<int32_t>& kv_start,
                             const std::vector<int32_t>& kv_end, const std::vector<int32_t>& positions,
                             int64_t kv_rows, int block_size) {
  AttentionCase c;
  const int64_t nq = q_start.back();
  const int64_t q_dim = int64_t{n_heads} * head_dim, kv_dim = int64_t{n_kv_heads} * head_dim;
  c.q = make_twin(b, nq, q_dim, random_values(gen, nq * q_dim));
  c.k = make_twin(b, kv_rows, kv_dim, random_values(gen, kv_rows * kv_dim));
  c.v = make_twin(b, kv_rows, kv_dim, random_values(gen, kv_rows * kv_dim));
  c.out = make_zeros(b, nq, q_dim);
  c.q_start = make_ints(b, q_start);
  c.kv_start = make_ints(b, kv_start);
  c.kv_end = make_ints(b, kv_end);
  c.positions = make_ints(b, positions);
  const int32_t n_seqs = static_cast<int32_t>(q_start.size()) - 1;
  int32_t max_q = 0, max_kv = 0;
  for (int32_t s = 0; s < n_seqs; s++) {
    max_q = std::max(max_q, q_start[s + 1] - q_start[s]);
    max_kv = std::max(max_kv, (kv_end.empty() ? kv_start[s + 1] : kv_end[s]) - kv_start[s]);
  }
  for (AttentionLayout* l : {&c.cpu, &c.gpu}) {
    const bool cpu = l == &c.cpu;
    l->n_seqs = n_seqs;
    l->max_q_len = max_q;
    l->max_kv_len = max_kv;
    l->q_start = cpu ? c.q_start.cpu : c.q_start.gpu;
    l->kv_start = cpu ? c.kv_start.cpu : c.kv_start.gpu;
    l->kv_end = kv_end.empty() ? nullptr : (cpu ? c.kv_end.cpu : c.kv_end.gpu);
    l->q_positions = cpu ? c.positions.cpu : c.positions.gpu;
    l->block_size = block_size;
  }
  return c;
}

void run_attention(Backends& b, AttentionCase& c, int n_heads, int n_kv_heads, int head_dim) {
  b.cpu->attention(c.q.cpu, c.k.cpu, c.v.cpu, c.cpu, n_heads, n_kv_heads, head_dim, c.out.cpu);
  b.gpu->attention(c.q.gpu, c.k.gpu, c.v.gpu, c.gpu, n_heads, n_kv_heads, head_dim, c.out.gpu);
}

}  // namespace

TEST_CASE("cuda: block-causal attention over full windows") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  std::mt19937 gen(16);
  struct Heads { int n_heads, n_kv_heads, head_dim; };
  const std::vector<int32_t> lengths = {5, 1, 70, 33};
  std::vector<int32_t> start = {0}, positions;
  for (int32_t len : lengths) {
    start.push_back(start.back() + len);
    for (int32_t p = 0; p < len; p++) positions.push_back(p);
  }
  for (const Heads h : {Heads{4, 2, 16}, Heads{3, 1, 72}, Heads{8, 2, 64}, Heads{4, 1, 128}, Heads{2, 2, 256}}) {
    for (int block : {1, 4, 32, 1000}) {
      CAPTURE(h.n_heads);
      CAPTURE(h.n_kv_heads);
      CAPTURE(h.head_dim);
      CAPTURE(block);
      AttentionCase c = make_attention(b, gen, h.n_heads, h.n_kv_heads, h.head_dim, start, start, {},
                                       positions, start.back(), block);
      run_attention(b, c, h.n_heads, h.n_kv_heads, h.head_dim);
      CHECK(twin_error(b, c.out) <= kF32Tol);
      if (block >= 70) {
        // One block holds every sequence: the mask hides nothing, so bidirectional agrees.
        AttentionLayout plain = c.gpu;
        plain.block_size = 0;
        plain.q_positions = nullptr;
        Twin bidir = make_zeros(b, c.out.gpu.rows, c.out.gpu.cols);
        b.gpu->attention(c.q.gpu, c.k.gpu, c.v.gpu, plain, h.n_heads, h.n_kv_heads, h.head_dim, bidir.gpu);
        CHECK(rel_error(fetch(*b.gpu, c.out.gpu), fetch(*b.gpu, bidir.gpu)) <= kF32Tol);
      }
    }
  }
}

TEST_CASE("cuda: block-causal attention over KV-cache slots never reads keys no query sees") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  std::mt19937 gen(17);
  const int block = 8;
  const int32_t slot = 64;
  // Four requests in slots of 64 rows:
  //  0: 4 complete blocks cached, the current block [32, 40) queried in full;
  //  1: nothing cached, the first block [0, 8);
  //  2: 2 blocks cached, part of the current block (positions 18, 20..23, a prompt's tail);
  //  3: queries from three different blocks in one query tile, keys up to 48: positions 40..47
  //     lie in the range but no query sees them.
  const std::vector<std::vector<int32_t>> queried = {
      {32, 33, 34, 35, 36, 37, 38, 39}, {0, 1, 2, 3, 4, 5, 6, 7}, {18, 20, 21, 22, 23}, {3, 12, 27, 39}};
  const std::vector<int32_t> visible_end = {40, 8, 24, 40};  // keys the request's queries reach
  const std::vector<int32_t> kv_end_pos = {40, 8, 24, 48};
  std::vector<int32_t> q_start = {0}, kv_start, kv_end, positions;
  for (size_t r = 0; r < queried.size(); r++) {
    q_start.push_back(q_start.back() + static_cast<int32_t>(queried[r].size()));
    kv_start.push_back(static_cast<int32_t>(r) * slot);
    kv_end.push_back(static_cast<int32_t>(r) * slot + kv_end_pos[r]);
    for (int32_t p : queried[r]) positions.push_back(p);
  }
  const int64_t cache_rows = static_cast<int64_t>(queried.size()) * slot;
  struct Heads { int n_heads, n_kv_heads, head_dim; };
  for (const Heads h : {Heads{4, 2, 32}, Heads{8, 2, 128}, Heads{4, 4, 256}}) {
    CAPTURE(h.n_heads);
    CAPTURE(h.n_kv_heads);
    CAPTURE(h.head_dim);
    AttentionCase c = make_attention(b, gen, h.n_heads, h.n_kv_heads, h.head_dim, q_start, kv_start, kv_end,
                                     positions, cache_rows, block);
    run_attention(b, c, h.n_heads, h.n_kv_heads, h.head_dim);
    CHECK(twin_error(b, c.out) <= kF32Tol);
    const std::vector<float> clean = fetch(*b.gpu, c.out.gpu);

    // NaN in every cache row no query can see (past visible_end, in or beyond kv_end): the
    // result must not change by a bit.
    const int64_t kv_dim = int64_t{h.n_kv_heads} * h.head_dim;
    std::vector<float> k = fetch(*b.gpu, c.k.gpu), v = fetch(*b.gpu, c.v.gpu);
    for (size_t r = 0; r < queried.size(); r++)
      for (int32_t p = visible_end[r]; p < slot; p++)
        for (int64_t d = 0; d < kv_dim; d++) {
          k[(r * slot + p) * kv_dim + d] = std::numeric_limits<float>::quiet_NaN();
          v[(r * slot + p) * kv_dim + d] = std::numeric_limits<float>::quiet_NaN();
        }
    b.gpu->upload(c.k.gpu.data, k.data(), k.size() * sizeof(float));
    b.gpu->upload(c.v.gpu.data, v.data(), v.size() * sizeof(float));
    b.gpu->attention(c.q.gpu, c.k.gpu, c.v.gpu, c.gpu, h.n_heads, h.n_kv_heads, h.head_dim, c.out.gpu);
    const std::vector<float> poisoned = fetch(*b.gpu, c.out.gpu);
    CHECK(std::memcmp(poisoned.data(), clean.data(), clean.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("cuda: pick with first_banned leaves the first banned entry choosable") {
  UNMASK_REQUIRE_CUDA();
  Backends b;
  std::mt19937 gen(18);
  const int64_t vocab = 1000, rows = 4;
  const int32_t mask = 997, eos = 998;
  std::vector<float> logits = random_values(gen, rows * vocab);
  // The mask is the best token of every row and EOS the second best.
  for (int64_t r = 0; r < rows; r++) {
    logits[r * vocab + mask] = 20.f;
    logits[r * vocab + eos] = 19.f;
  }
  Twin l = make_twin(b, rows, vocab, logits);
  std::vector<PickParams> params(rows);
  for (int64_t r = 0; r < rows; r++) {
    params[r].first_banned = 1;
    params[r].seed = 7;
    params[r].position = static_cast<uint32_t>(r);
  }
  params[1].n_banned = 1;     // bans [1, 1): nothing
  params[2].temperature = 0.5f;
  params[3].first_banned = 0;  // both banned, as before
  const std::vector<int32_t> banned = {mask, eos};
  std::vector<PickResult> want(rows), got(rows);
  b.cpu->pick(l.cpu, nullptr, params.data(), banned, want.data());
  b.gpu->pick(l.gpu, nullptr, params.data(), banned, got.data());
  for (int64_t r = 0; r < rows; r++) {
    CAPTURE(r);
    unmask::test::check_pick(got[r], want[r]);
  }
  CHECK(got[0].token == mask);  // EOS stays banned, the mask is not
  CHECK(got[1].token == mask);
  CHECK(got[3].token != mask);
  CHECK(got[3].token != eos);
}
