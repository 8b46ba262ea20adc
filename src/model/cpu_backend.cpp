// CPU implementation of every Backend op (OpenBLAS sgemm, OpenMP), the reference for CUDA.
#include "model/cpu_backend.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <thread>

#include "common.h"
#include "model/rng.h"

namespace unmask {
namespace {

// Widens `count` elements of `src` (any dtype) into f32 `dst`.
void widen(const void* src, DType dtype, int64_t count, float* dst) {
  switch (dtype) {
    case DType::F32:
      std::memcpy(dst, src, static_cast<size_t>(count) * 4);
      break;
    case DType::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < count; i++) dst[i] = bf16_to_f32(s[i]);
      break;
    }
    case DType::F16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < count; i++) dst[i] = f16_to_f32(s[i]);
      break;
    }
  }
}


// note: every parallel region ends in a barrier, and on a loaded machine a barrier can cost
// milliseconds while a descheduled thread is waited for; small elementwise ops run serially.
bool worth_threads(int64_t elements) { return elements >= (int64_t{1} << 18); }

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads) {
    threads_ = resolve_cpu_threads(threads);
    omp_set_num_threads(threads_);
    // note: one thread pool only. OpenBLAS runs single-threaded inside our OpenMP regions; two
    // pools (OpenMP workers spinning while OpenBLAS's pthreads compute) slowed a step 20x on two
    // cores.
    openblas_set_num_threads(1);
  }
  ~CpuBackend() override {
    for (auto& [ptr, bytes] : allocations_) std::free(ptr);
  }

  std::string name() const override { return "cpu"; }
  std::string device() const override {
    return cpu_model_name() + " (" + std::to_string(threads_) + " threads)";
  }

  void* alloc(size_t bytes) override {
    size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
    void* ptr = std::aligned_alloc(64, rounded);
    if (!ptr) fail_runtime("out of host memory allocating " + std::to_string(bytes) + " bytes");
    allocations_[ptr] = rounded;
    live_bytes_ += rounded;
    peak_bytes_ = std::max(peak_bytes_, live_bytes_);
    return ptr;
  }
  void free(void* ptr) override {
    auto it = allocations_.find(ptr);
    if (it == allocations_.end()) return;
    live_bytes_ -= it->second;
    std::free(ptr);
    allocations_.erase(it);
  }
  Tensor random_weight(int64_t rows, int64_t cols, DType dtype, uint64_t seed,
                       float scale) override {
    Tensor t;
    t.rows = rows;
    t.cols = cols;
    t.dtype = dtype;
    t.data = alloc(t.n_bytes());
    const int64_t n = t.numel();
#pragma omp parallel for
    for (int64_t i = 0; i < n; i++) {
      const float w = synthetic_weight(seed, static_cast<uint64_t>(i), scale);
      switch (dtype) {
        case DType::F32: t.f32()[i] = w; break;
        case DType::BF16: static_cast<uint16_t*>(t.data)[i] = f32_to_bf16(w); break;
        case DType::F16: static_cast<uint16_t*>(t.data)[i] = f32_to_f16(w); break;
      }
    }
    return t;
  }

  // Weights stay in the mmap; the page cache holds them, not our heap.
  Tensor upload_weight(const Tensor& host) override { return host; }
  void upload(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override {
    // Split over the threads: one core alone does not reach the memory bandwidth.
    const size_t chunk = (bytes + threads_ - 1) / threads_;
#pragma omp parallel for num_threads(threads_)
    for (int t = 0; t < threads_; t++) {
      const size_t begin = std::min(bytes, t * chunk), end = std::min(bytes, begin + chunk);
      std::memcpy(static_cast<char*>(dst) + begin, static_cast<const char*>(src) + begin, end - begin);
    }
  }
  size_t peak_bytes() const override { return peak_bytes_; }
  void reset_peak() override { peak_bytes_ = live_bytes_; }

  void embed(const int32_t* ids, const Tensor& table, Tensor& out) override {
    UNMASK_CHECK(out.cols == table.cols, "embed width mismatch");
    const size_t row_bytes = static_cast<size_t>(table.cols) * dtype_bytes(table.dtype);
#pragma omp parallel for if (worth_threads(out.numel()))
    for (int64_t i = 0; i < out.rows; i++) {
      UNMASK_CHECK(ids[i] >= 0 && ids[i] < table.rows, "token id " << ids[i] << " out of range");
      const char* src = static_cast<const char*>(table.data) + ids[i] * row_bytes;
      widen(src, table.dtype, table.cols, out.f32() + i * out.cols);
    }
  }

  void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
    const int64_t d = x.cols;
    std::vector<float> weight(d);
    widen(w.data, w.dtype, d, weight.data());
#pragma omp parallel for if (worth_threads(x.numel()))
    for (int64_t r = 0; r < x.rows; r++) {
      const float* xr = x.f32() + r * d;
      float* o = out.f32() + r * d;
      double sum = 0;
      for (int64_t i = 0; i < d; i++) sum += static_cast<double>(xr[i]) * xr[i];
      const float scale = static_cast<float>(1.0 / std::sqrt(sum / d + eps));
      for (int64_t i = 0; i < d; i++) o[i] = xr[i] * scale * weight[i];
    }
  }

  void matmul(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out) override {
    UNMASK_CHECK(x.cols == w.cols && out.rows == x.rows && out.cols == w.rows,
                 "matmul shape mismatch: x [" << x.rows << "," << x.cols << "] w [" << w.rows
                                              << "," << w.cols << "] out [" << out.rows << ","
                                              << out.cols << "]");
    const int64_t n = x.rows, k = x.cols, m = w.rows;
    // Each thread owns a contiguous range of output columns (weight rows): no reduction needed,
    // and each widens only the weight rows it multiplies.
    const int64_t chunk = ((m + threads_ - 1) / threads_ + 15) / 16 * 16;
    const size_t row_bytes = static_cast<size_t>(k) * dtype_bytes(w.dtype);
    // note: bf16/f16 weights are widened a tile of rows at a time, so a bf16 model never needs an
    // fp32 copy of itself; a tile stays in L2.
    const int64_t tile_rows = std::max<int64_t>(16, (int64_t{1} << 18) / std::max<int64_t>(k, 1));
    if (w.dtype != DType::F32) {
      if (static_cast<int>(weight_tiles_.size()) < threads_) weight_tiles_.resize(threads_);
      for (auto& tile : weight_tiles_) ensure_scratch(tile, static_cast<size_t>(tile_rows * k));
    }
#pragma omp parallel num_threads(threads_)
    {
      const int t = omp_get_thread_num();
      const int64_t r_begin = std::min(m, t * chunk), r_end = std::min(m, r_begin + chunk);
      if (w.dtype == DType::F32) {
        if (r_end > r_begin)
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r_end - r_begin, k, 1.f, x.f32(),
                      k, w.f32() + r_begin * k, k, 0.f, out.f32() + r_begin, m);
      } else {
        float* tile = weight_tiles_[t].data();
        for (int64_t r0 = r_begin; r0 < r_end; r0 += tile_rows) {
          const int64_t rows = std::min(tile_rows, r_end - r0);
          const char* src = static_cast<const char*>(w.data) + r0 * row_bytes;
          for (int64_t r = 0; r < rows; r++) widen(src + r * row_bytes, w.dtype, k, tile + r * k);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, rows, k, 1.f, x.f32(), k, tile,
                      k, 0.f, out.f32() + r0, m);
        }
      }
    }
    if (bias && bias->data) {
      std::vector<float> b(m);
      widen(bias->data, bias->dtype, m, b.data());
#pragma omp parallel for
      for (int64_t r = 0; r < n; r++)
        for (int64_t c = 0; c < m; c++) out.f32()[r * m + c] += b[c];
    }
  }

  void rope(Tensor& x, const int32_t* positions, int head_dim, float theta) override {
    const int64_t n_heads = x.cols / head_dim;
    const int half = head_dim / 2;
    std::vector<double> inv_freq(half);
    for (int i = 0; i < half; i++)
      inv_freq[i] = std::pow(static_cast<double>(theta), -2.0 * i / head_dim);
#pragma omp parallel for if (worth_threads(x.numel() * 8))
    for (int64_t r = 0; r < x.rows; r++) {
      for (int i = 0; i < half; i++) {
        const double angle = positions[r] * inv_freq[i];
        const float c = static_cast<float>(std::cos(angle));
        const float s = static_cast<float>(std::sin(angle));
        for (int64_t h = 0; h < n_heads; h++) {
          float* u = x.f32() + r * x.cols + h * head_dim;
          const float a = u[i], b = u[i + half];
          u[i] = a * c - b * s;
          u[i + half] = b * c + a * s;
        }
      }
    }
  }

  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionLayout& layout,
                 int n_heads, int n_kv_heads, int head_dim, Tensor& out) override {
    const int group = n_heads / n_kv_heads;
    const float scale = 1.f / std::sqrt(static_cast<float>(head_dim));
    const int64_t q_ld = q.cols, kv_ld = k.cols;
    if (static_cast<int>(scores_.size()) < threads_) scores_.resize(threads_);
    for (auto& sc : scores_) ensure_scratch(sc, static_cast<size_t>(layout.max_q_len) * layout.max_kv_len);
    const int64_t n_tasks = static_cast<int64_t>(layout.n_seqs) * n_heads;
#pragma omp parallel for schedule(dynamic) num_threads(threads_)
    for (int64_t task = 0; task < n_tasks; task++) {
      const int s = static_cast<int>(task / n_heads), h = static_cast<int>(task % n_heads);
      const int32_t q0 = layout.q_start[s], nq = layout.q_start[s + 1] - q0;
      const int32_t k0 = layout.kv_start[s];
      const int32_t nk = (layout.kv_end ? layout.kv_end[s] : layout.kv_start[s + 1]) - k0;
      if (nq == 0) continue;
      const int kvh = h / group;
      float* scores = scores_[omp_get_thread_num()].data();  // [nq, nk]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, head_dim, scale,
                  q.f32() + q0 * q_ld + h * head_dim, q_ld, k.f32() + k0 * kv_ld + kvh * head_dim,
                  kv_ld, 0.f, scores, nk);
      for (int32_t i = 0; i < nq; i++) {
        float* row = scores + static_cast<int64_t>(i) * nk;
        float mx = -std::numeric_limits<float>::infinity();
        for (int32_t j = 0; j < nk; j++) mx = std::max(mx, row[j]);
        double sum = 0;
        for (int32_t j = 0; j < nk; j++) {
          row[j] = std::exp(row[j] - mx);
          sum += row[j];
        }
        const float inv = static_cast<float>(1.0 / sum);
        for (int32_t j = 0; j < nk; j++) row[j] *= inv;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, head_dim, nk, 1.f, scores, nk,
                  v.f32() + k0 * kv_ld + kvh * head_dim, kv_ld, 0.f,
                  out.f32() + q0 * out.cols + h * head_dim, out.cols);
    }
  }

  void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) override {
    const int64_t n = gate.numel();
#pragma omp parallel for if (worth_threads(n * 8))
    for (int64_t i = 0; i < n; i++) {
      const float g = gate.f32()[i];
      out.f32()[i] = g / (1.f + std::exp(-g)) * up.f32()[i];
    }
  }

  void add(Tensor& x, const Tensor& y) override {
    const int64_t n = x.numel();
#pragma omp parallel for if (worth_threads(n))
    for (int64_t i = 0; i < n; i++) x.f32()[i] += y.f32()[i];
  }

  void gather_rows(const Tensor& x, const int32_t* rows, Tensor& out) override {
#pragma omp parallel for if (worth_threads(out.numel()))
    for (int64_t i = 0; i < out.rows; i++) {
      UNMASK_CHECK(rows[i] >= 0 && rows[i] < x.rows, "gather row " << rows[i] << " out of range");
      std::memcpy(out.f32() + i * out.cols, x.f32() + rows[i] * x.cols,
                  static_cast<size_t>(x.cols) * 4);
    }
  }

  void scatter_rows(const Tensor& x, const int32_t* rows, Tensor& out) override {
#pragma omp parallel for if (worth_threads(x.numel()))
    for (int64_t i = 0; i < x.rows; i++) {
      UNMASK_CHECK(rows[i] >= 0 && rows[i] < out.rows, "scatter row " << rows[i] << " out of range");
      std::memcpy(out.f32() + rows[i] * out.cols, x.f32() + i * x.cols,
                  static_cast<size_t>(x.cols) * 4);
    }
  }

  void pick(const Tensor& logits, const Tensor* uncond, const PickParams* params,
            const std::vector<int32_t>& banned, PickResult* out) override {
    const int64_t vocab = logits.cols;
    const int n_threads = omp_get_max_threads();
    if (static_cast<int>(pick_scratch_.size()) < n_threads) pick_scratch_.resize(n_threads);
    ensure_scratch(pick_rows_, static_cast<size_t>(n_threads) * vocab);
#pragma omp parallel for schedule(dynamic)
    for (int64_t r = 0; r < logits.rows; r++) {
      const int t = omp_get_thread_num();
      float* row = pick_rows_.data() + static_cast<size_t>(t) * vocab;
      std::memcpy(row, logits.f32() + r * vocab, static_cast<size_t>(vocab) * 4);
      const float* u = nullptr;
      if (params[r].cfg_scale > 0.f && uncond) u = uncond->f32() + params[r].uncond_row * vocab;
      out[r] = pick_row(row, u, vocab, params[r], banned, pick_scratch_[t]);
    }
  }

 private:
  static void ensure_scratch(std::vector<float>& v, size_t n) {
    if (v.size() < n) v.resize(n);
  }

  int threads_ = 1;
  std::map<void*, size_t> allocations_;
  size_t live_bytes_ = 0, peak_bytes_ = 0;
  std::vector<std::vector<float>> weight_tiles_;  // per thread: [tile_rows, in] widened weights
  std::vector<std::vector<float>> scores_;        // per thread: [max_q_len, max_kv_len]
  std::vector<float> pick_rows_;    // [threads, vocab] working copy of a logits row
  std::vector<std::vector<int32_t>> pick_scratch_;  // per-thread index buffers for top-k/top-p
};

}  // namespace

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "CPU";
}

int max_cpu_threads() {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(8, 4 * cores);
}

int resolve_cpu_threads(int requested) {
  const int limit = max_cpu_threads();
  if (requested > 0) {
    if (requested > limit) fail_usage("--threads " + std::to_string(requested) + " exceeds the limit of " + std::to_string(limit));
    return requested;
  }
  const char* env = std::getenv("OMP_NUM_THREADS");
  if (env == nullptr || *env == '\0') return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const std::string text = env;
  const bool digits = text.find_first_not_of("0123456789") == std::string::npos && text.size() <= 9;
  const long n = digits ? std::strtol(text.c_str(), nullptr, 10) : 0;
  if (n < 1 || n > limit)
    fail_usage("OMP_NUM_THREADS=" + text + " must be a whole number in [1, " + std::to_string(limit) +
               "]: at most 4 per core (and at least 8), as for --threads");
  return static_cast<int>(n);
}

std::unique_ptr<Backend> make_cpu_backend(int threads) {
  return std::make_unique<CpuBackend>(threads);
}

}  // namespace unmask
