// The CPU backend's machinery: its thread pool, the OpenBLAS it loads, weights widened at load or
// tile by tile, and what a CPU run leaves unloaded.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "fixtures.h"
#include "model/backend.h"
#include "model/blas.h"
#include "model/onednn.h"
#include "model/rng.h"
#include "model/thread_pool.h"

using namespace unmask;

TEST_CASE("thread pool: every task runs once, on a thread index below the count asked for") {
  ThreadPool pool(3);
  CHECK(pool.size() == 3);
  for (int round = 0; round < 300; round++) {
    const int64_t n = 1 + (round * 37) % 500;
    const int max_threads = 1 + round % 4;
    std::vector<std::atomic<int>> runs(n);
    std::atomic<int> bad_thread{0};
    pool.run(n, max_threads, [&](int64_t task, int thread) {
      runs[task].fetch_add(1);
      if (thread < 0 || thread >= std::min<int64_t>({max_threads, 3, n})) bad_thread.fetch_add(1);
    });
    int wrong = 0;
    for (auto& r : runs) wrong += r.load() != 1;
    REQUIRE(wrong == 0);
    REQUIRE(bad_thread.load() == 0);
  }
}

TEST_CASE("thread pool: one thread runs on the caller; zero tasks run nothing") {
  ThreadPool pool(2);
  std::set<std::thread::id> ids;
  pool.run(50, 1, [&](int64_t, int thread) {
    CHECK(thread == 0);
    ids.insert(std::this_thread::get_id());
  });
  CHECK(ids == std::set<std::thread::id>{std::this_thread::get_id()});
  bool ran = false;
  pool.run(0, 2, [&](int64_t, int) { ran = true; });
  CHECK(!ran);
}

TEST_CASE("thread pool: a task's exception reaches the caller and the pool stays usable") {
  ThreadPool pool(2);
  CHECK_THROWS_WITH_AS(pool.run(100, 2,
                                [](int64_t task, int) {
                                  if (task == 17) throw std::runtime_error("task 17 failed");
                                }),
                       "task 17 failed", std::runtime_error);
  std::atomic<int64_t> sum{0};
  pool.run(100, 2, [&](int64_t task, int) { sum.fetch_add(task); });
  CHECK(sum.load() == 4950);
}

TEST_CASE("blas: the kernels follow the CPU's features, and the choice is reported") {
  const std::string core = openblas_coretype_for_cpu();
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    CHECK((core == "Haswell" || core == "SkylakeX" || core == "Cooperlake"));
  }
  if (!__builtin_cpu_supports("avx512f")) CHECK(core != "SkylakeX");
#endif
  const std::string text = blas().description;
  CAPTURE(text);
  CHECK(text.rfind("OpenBLAS", 0) == 0);
  CHECK(text.find("kernels") != std::string::npos);
  const char* user = std::getenv("OPENBLAS_CORETYPE");
  if (!core.empty() && (!user || std::string(user) == core)) {
    // OpenBLAS names SandyBridge "Sandybridge"; compare without case.
    std::string lower_text = text, lower_core = core;
    for (char& c : lower_text) c = static_cast<char>(std::tolower(c));
    for (char& c : lower_core) c = static_cast<char>(std::tolower(c));
    CHECK(lower_text.find(lower_core) != std::string::npos);
  }
}

namespace {
// out = x · wᵀ in double, for the tolerance checks below.
std::vector<double> reference_matmul(const std::vector<float>& x, const std::vector<float>& w,
                                     int64_t n, int64_t k, int64_t m) {
  std::vector<double> out(n * m);
  for (int64_t r = 0; r < n; r++)
    for (int64_t c = 0; c < m; c++) {
      double s = 0;
      for (int64_t i = 0; i < k; i++) s += static_cast<double>(x[r * k + i]) * w[c * k + i];
      out[r * m + c] = s;
    }
  return out;
}
}  // namespace

TEST_CASE("cpu backend: bf16 weights give the same products widened at load or tile by tile") {
  const int64_t n = 37, k = 300, m = 515;  // m spans several tiles and an uneven thread split
  std::vector<uint16_t> w_bf16(m * k);
  std::vector<float> w_value(m * k), x(n * k);
  for (int64_t i = 0; i < m * k; i++) {
    w_bf16[i] = f32_to_bf16(synthetic_weight(7, i, 0.5f));
    w_value[i] = bf16_to_f32(w_bf16[i]);
  }
  for (int64_t i = 0; i < n * k; i++) x[i] = synthetic_weight(8, i, 1.f);
  const std::vector<double> want = reference_matmul(x, w_value, n, k, m);
  Tensor host_w{w_bf16.data(), DType::BF16, m, k};

  for (size_t budget : {size_t{0}, SIZE_MAX}) {
    CAPTURE(budget);
    auto be = make_cpu_backend(2, budget);
    const Tensor w = be->upload_weight(host_w);
    CHECK(w.dtype == (budget == 0 ? DType::BF16 : DType::F32));
    Tensor xt{be->alloc(n * k * 4), DType::F32, n, k};
    Tensor out{be->alloc(n * m * 4), DType::F32, n, m};
    be->upload(xt.data, x.data(), n * k * 4);
    be->matmul(xt, w, nullptr, out);
    std::vector<float> got(n * m);
    be->download(got.data(), out.data, n * m * 4);
    double worst = 0;
    for (int64_t i = 0; i < n * m; i++)
      worst = std::max(worst, std::abs(got[i] - want[i]) / (1.0 + std::abs(want[i])));
    CHECK(worst < 1e-5);  // fp32 accumulation over k = 300 terms of size ~0.5
    const std::vector<std::string> details = be->details();
    REQUIRE(details.size() == 3);
    CHECK(details[2].rfind("weights: ", 0) == 0);
    CHECK(details[2].find(budget == 0 ? "0 tensors widened" : "1 tensors widened") != std::string::npos);
  }
}

TEST_CASE("cpu backend: f32 weights packed for oneDNN give the products of the unpacked ones") {
  if (!onednn_available()) {
    MESSAGE("oneDNN not available: " << onednn_description());
    return;
  }
  // m spans several panels and ends in a partial one; n is no multiple of any block.
  for (const auto& [n, k, m] : {std::tuple<int64_t, int64_t, int64_t>{37, 300, 515}, {1, 64, 128}, {130, 96, 200}}) {
    CAPTURE(n);
    std::vector<float> w(m * k), x(n * k);
    for (int64_t i = 0; i < m * k; i++) w[i] = synthetic_weight(5, i, 0.5f);
    for (int64_t i = 0; i < n * k; i++) x[i] = synthetic_weight(6, i, 1.f);
    const std::vector<double> want = reference_matmul(x, w, n, k, m);
    for (size_t budget : {size_t{0}, SIZE_MAX}) {
      CAPTURE(budget);
      auto be = make_cpu_backend(2, budget);
      const Tensor wt = be->upload_weight(Tensor{w.data(), DType::F32, m, k});
      Tensor xt{be->alloc(n * k * 4), DType::F32, n, k};
      Tensor out{be->alloc(n * m * 4), DType::F32, n, m};
      be->upload(xt.data, x.data(), n * k * 4);
      for (int repeat = 0; repeat < 2; repeat++) {  // the second call reuses the packed panels
        std::fill_n(out.f32(), n * m, std::nanf(""));
        be->matmul(xt, wt, nullptr, out);
        double worst = 0;
        for (int64_t i = 0; i < n * m; i++)
          worst = std::max(worst, std::abs(out.f32()[i] - want[i]) / (1.0 + std::abs(want[i])));
        CHECK(worst < 1e-5);  // fp32 accumulation over k terms; NaN (a column not written) fails
      }
      std::string weights;  // the "weights: ..." line, absent when nothing was widened or packed
      for (const std::string& line : be->details())
        if (line.rfind("weights: ", 0) == 0) weights = line;
      if (budget == 0) CHECK(weights.find("packed for oneDNN") == std::string::npos);
      else CHECK(weights.find("and 1 packed for oneDNN") != std::string::npos);
    }
  }
}

TEST_CASE("cpu backend: synthetic bf16 weights stored in f32 hold the bf16-rounded values") {
  auto widened = make_cpu_backend(1);
  auto kept = make_cpu_backend(1, 0);
  const Tensor a = widened->random_weight(9, 33, DType::BF16, 42, 0.02f);
  const Tensor b = kept->random_weight(9, 33, DType::BF16, 42, 0.02f);
  REQUIRE(a.dtype == DType::F32);
  REQUIRE(b.dtype == DType::BF16);
  for (int64_t i = 0; i < a.numel(); i++) {
    REQUIRE(a.f32()[i] == bf16_to_f32(static_cast<const uint16_t*>(b.data)[i]));
    REQUIRE(a.f32()[i] == bf16_to_f32(f32_to_bf16(synthetic_weight(42, i, 0.02f))));
  }
}

TEST_CASE("cli: a CPU run loads neither cuBLAS nor the CUDA runtime, and OpenMP only with oneDNN") {
  for (const std::string onednn : {"1", "0"}) {
    CAPTURE(onednn);
    // LD_DEBUG=libs makes the dynamic loader name every library it loads (on stderr).
    const std::string log = "/tmp/unmask_test_libs_" + std::to_string(::getpid());
    const std::string cmd = "UNMASK_ONEDNN=" + onednn + " LD_DEBUG=libs " + std::string(UNMASK_BINARY) +
                            " --backend cpu -q -m " + unmask::test::fixture("tiny-f32-gqa") +
                            " --gen-length 4 --block-length 4 hello > /dev/null 2> " + log;
    REQUIRE(std::system(cmd.c_str()) == 0);
    std::ifstream in(log);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::remove(log.c_str());
    const bool dnnl = text.find("libdnnl") != std::string::npos;
    // The check can see a dlopen: one of the two GEMM libraries is loaded at run time.
    CHECK((dnnl || text.find("libopenblas") != std::string::npos));
    if (onednn == "0") CHECK(!dnnl);
    CHECK(text.find("libcublas") == std::string::npos);
    CHECK(text.find("libcudart") == std::string::npos);
    CHECK(text.find("libunmask-cuda") == std::string::npos);
    // OpenMP comes only as oneDNN's runtime (which unmask runs one thread per calling thread).
    if (!dnnl) CHECK(text.find("libgomp") == std::string::npos);
  }
}

TEST_CASE("thread pool: when a worker is late loop after loop, the caller runs the next loops alone") {
  ThreadPool pool(2);
  // The caller's tasks take no time, a task on the worker sleeps: the caller finishes its share
  // at once and then waits, as it would for a worker the OS has descheduled. (If the caller takes
  // every task, it still waits for the worker to wake and check in: also late.)
  for (int loop = 0; loop < 60 && pool.solo_loops() == 0; loop++) {
    pool.run(64, 2, [&](int64_t, int thread) {
      if (thread == 1) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    });
  }
  // The first loops (a moving average) pass before the rule switches to the caller alone.
  REQUIRE(pool.solo_loops() > 0);
  std::set<int> threads_used;
  pool.run(8, 2, [&](int64_t, int thread) { threads_used.insert(thread); });
  CHECK(threads_used == std::set<int>{0});
}
