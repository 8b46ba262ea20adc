// CPU implementation of every Backend op (oneDNN over packed weights, else OpenBLAS; our thread pool), the reference for CUDA.
#include "model/cpu_backend.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <thread>
#include <unordered_map>

#include "common.h"
#include "model/blas.h"
#include "model/onednn.h"
#include "model/rng.h"
#include "model/moe_route.h"
#include "model/thread_pool.h"

namespace unmask {
namespace {

// note: every parallel loop ends in a barrier, and on a loaded machine a barrier can cost
// milliseconds while a descheduled thread is waited for; so a loop gets one thread per this much
// work (element updates for elementwise ops, multiply-adds for GEMMs), and small ones run on the
// calling thread alone.
constexpr int64_t kElementsPerThread = int64_t{1} << 19;
constexpr int kChunksPerThread = 4;
// Multiply-adds: about 40 us of one core at oneDNN's 100+ GFLOP/s. At 16e6 (sized for OpenBLAS)
// the 512-wide projections and the attention of a 117-row canvas ran on one thread: 20% of a
// 2-thread forward of the d512 model (measured with per-loop timers).
constexpr double kMacsPerThread = 4e6;

// Weights of another dtype are widened to f32 at load while their f32 copies fit this budget;
// the rest are widened a tile at a time inside each matmul.
size_t default_widen_budget() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  const size_t ram = pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : 0;
  return std::min<size_t>(size_t{2} << 30, ram / 8);
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(int threads, size_t widen_budget)
      : threads_(resolve_cpu_threads(threads)),
        sgemm_(onednn_sgemm() ? onednn_sgemm() : blas().sgemm),
        pool_(threads_),
        widen_budget_(widen_budget == SIZE_MAX ? default_widen_budget() : widen_budget) {}
  ~CpuBackend() override {
    for (auto& [ptr, bytes] : allocations_) std::free(ptr);
  }

  std::string name() const override { return "cpu"; }
  std::string device() const override {
    return cpu_model_name() + " (" + std::to_string(threads_) + " threads)";
  }
  std::vector<std::string> details() const override {
    std::vector<std::string> lines = {"blas: " + blas().description, "onednn: " + onednn_description()};
    if (widened_bytes_ > 0 || tiled_weights_ > 0 || packed_weights_ > 0)
      lines.push_back("weights: " + std::to_string(widened_weights_) +
                      " tensors widened to f32 at load and " + std::to_string(packed_weights_) +
                      " packed for oneDNN at first use (" + std::to_string(widened_bytes_ >> 20) +
                      " MiB of a " + std::to_string(widen_budget_ >> 20) + " MiB budget), " +
                      std::to_string(tiled_weights_) + " widened tile by tile in each matmul");
    return lines;
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
    packed_.erase(ptr);
    weights_.erase(ptr);
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
    // note: values are rounded to `dtype` and stored in f32 when the widening budget allows, as a
    // file's weights of that dtype would be after upload_weight.
    t.dtype = dtype == DType::F32 || claim_widening(rows * cols) ? DType::F32 : dtype;
    t.data = alloc(t.n_bytes());
    register_weight(t);
    const int64_t n = t.numel();
    parallel_ranges(n, n * 8, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; i++) {
        const float w = synthetic_weight(seed, static_cast<uint64_t>(i), scale);
        switch (dtype) {
          case DType::F32: t.f32()[i] = w; break;
          case DType::BF16: {
            const uint16_t h = f32_to_bf16(w);
            if (t.dtype == DType::F32) t.f32()[i] = bf16_to_f32(h);
            else static_cast<uint16_t*>(t.data)[i] = h;
            break;
          }
          case DType::F16: {
            const uint16_t h = f32_to_f16(w);
            if (t.dtype == DType::F32) t.f32()[i] = f16_to_f32(h);
            else static_cast<uint16_t*>(t.data)[i] = h;
            break;
          }
        }
      }
    });
    return t;
  }

  // f32 weights stay in the mmap (the page cache holds them, not our heap); others are widened
  // to an f32 copy once while the budget lasts, so no matmul widens them again.
  Tensor upload_weight(const Tensor& host) override {
    if (host.dtype == DType::F32 || !host.data || !claim_widening(host.numel())) {
      register_weight(host);
      return host;
    }
    Tensor t = host;
    t.dtype = DType::F32;
    t.data = alloc(t.n_bytes());
    const int64_t cols = host.cols;
    const size_t row_bytes = static_cast<size_t>(cols) * dtype_bytes(host.dtype);
    parallel_ranges(host.rows, host.numel(), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; r++)
        widen_to_f32(static_cast<const char*>(host.data) + r * row_bytes, host.dtype, cols, t.f32() + r * cols);
    });
    register_weight(t);
    return t;
  }
  void upload(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override {
    // Split over the threads: one core alone does not reach the memory bandwidth.
    const size_t chunk = (bytes + threads_ - 1) / threads_;
    pool_.run(threads_, threads_, [&](int64_t t, int) {
      const size_t begin = std::min(bytes, t * chunk), end = std::min(bytes, begin + chunk);
      std::memcpy(static_cast<char*>(dst) + begin, static_cast<const char*>(src) + begin, end - begin);
    });
  }
  size_t peak_bytes() const override { return peak_bytes_; }
  void reset_peak() override { peak_bytes_ = live_bytes_; }

  void embed(const int32_t* ids, const Tensor& table, Tensor& out) override {
    UNMASK_CHECK(out.cols == table.cols, "embed width mismatch");
    const size_t row_bytes = static_cast<size_t>(table.cols) * dtype_bytes(table.dtype);
    parallel_ranges(out.rows, out.numel(), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; i++) {
        UNMASK_CHECK(ids[i] >= 0 && ids[i] < table.rows, "token id " << ids[i] << " out of range");
        const char* src = static_cast<const char*>(table.data) + ids[i] * row_bytes;
        widen_to_f32(src, table.dtype, table.cols, out.f32() + i * out.cols);
      }
    });
  }

  void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
    const int64_t d = x.cols;
    std::vector<float> weight(d);
    widen_to_f32(w.data, w.dtype, d, weight.data());
    parallel_ranges(x.rows, x.numel(), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; r++) {
        const float* xr = x.f32() + r * d;
        float* o = out.f32() + r * d;
        double sum = 0;
        for (int64_t i = 0; i < d; i++) sum += static_cast<double>(xr[i]) * xr[i];
        const float scale = static_cast<float>(1.0 / std::sqrt(sum / d + eps));
        for (int64_t i = 0; i < d; i++) o[i] = xr[i] * scale * weight[i];
      }
    });
  }

  void matmul(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out) override {
    UNMASK_CHECK(x.cols == w.cols && out.rows == x.rows && out.cols == w.rows,
                 "matmul shape mismatch: x [" << x.rows << "," << x.cols << "] w [" << w.rows
                                              << "," << w.cols << "] out [" << out.rows << ","
                                              << out.cols << "]");
    const int64_t n = x.rows, k = x.cols, m = w.rows;
    // Each thread owns a contiguous range of output columns (weight rows): no reduction needed,
    // and each widens only the weight rows it multiplies.
    const int threads = threads_for(static_cast<double>(n) * k * m);
    if (const PackedWeight* packed = packed_for(w)) {
      // Panels handed out as threads come free, as the chunks below are.
      pool_.run(packed->panels(), threads, [&](int64_t panel, int) {
        packed->multiply(static_cast<int>(panel), x.f32(), n,
                         out.f32() + panel * PackedWeight::kPanelRows, m);
      });
      add_bias(bias, out);
      return;
    }
    // note: a few chunks per thread, handed out as threads come free: a thread that the OS
    // deschedules (a busy machine) then delays the loop by one chunk, not by half the work.
    const int64_t n_chunks = threads == 1 ? 1 : std::min<int64_t>(kChunksPerThread * threads, (m + 63) / 64);
    const int64_t chunk = ((m + n_chunks - 1) / n_chunks + 15) / 16 * 16;
    const size_t row_bytes = static_cast<size_t>(k) * dtype_bytes(w.dtype);
    // note: weights past the widening budget are widened a tile of rows at a time, so a big bf16
    // model never needs an fp32 copy of itself; a tile stays in L2.
    const int64_t tile_rows = std::max<int64_t>(16, (int64_t{1} << 18) / std::max<int64_t>(k, 1));
    if (w.dtype != DType::F32) {
      if (static_cast<int>(weight_tiles_.size()) < threads) weight_tiles_.resize(threads);
      for (auto& tile : weight_tiles_) ensure_scratch(tile, static_cast<size_t>(tile_rows * k));
    }
    pool_.run((m + chunk - 1) / chunk, threads, [&](int64_t t, int thread) {
      const int64_t r_begin = std::min(m, t * chunk), r_end = std::min(m, r_begin + chunk);
      if (w.dtype == DType::F32) {
        if (r_end > r_begin)
          sgemm_(false, true, n, r_end - r_begin, k, 1.f, x.f32(), k, w.f32() + r_begin * k, k, 0.f,
                 out.f32() + r_begin, m);
        return;
      }
      float* tile = weight_tiles_[thread].data();
      for (int64_t r0 = r_begin; r0 < r_end; r0 += tile_rows) {
        const int64_t rows = std::min(tile_rows, r_end - r0);
        const char* src = static_cast<const char*>(w.data) + r0 * row_bytes;
        for (int64_t r = 0; r < rows; r++) widen_to_f32(src + r * row_bytes, w.dtype, k, tile + r * k);
        sgemm_(false, true, n, rows, k, 1.f, x.f32(), k, tile, k, 0.f, out.f32() + r0, m);
      }
    });
    add_bias(bias, out);
  }

  void add_bias(const Tensor* bias, Tensor& out) {
    if (!bias || !bias->data) return;
    const int64_t n = out.rows, m = out.cols;
    std::vector<float> b(m);
    widen_to_f32(bias->data, bias->dtype, m, b.data());
    parallel_ranges(n, n * m, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; r++)
        for (int64_t c = 0; c < m; c++) out.f32()[r * m + c] += b[c];
    });
  }

  void rope(Tensor& x, const int32_t* positions, int head_dim, int rotary_dim, float theta) override {
    UNMASK_CHECK(rotary_dim >= 2 && rotary_dim % 2 == 0 && rotary_dim <= head_dim,
                 "bad rotary dimension " << rotary_dim << " for head_dim " << head_dim);
    const int64_t n_heads = x.cols / head_dim;
    const int half = rotary_dim / 2;
    int32_t max_position = 0;
    for (int64_t r = 0; r < x.rows; r++) {
      UNMASK_CHECK(positions[r] >= 0, "negative RoPE position " << positions[r]);
      max_position = std::max(max_position, positions[r]);
    }
    const RopeTable& table = rope_table(rotary_dim, theta, max_position + 1);
    parallel_ranges(x.rows, x.numel(), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; r++) {
        const float* cos = table.cos.data() + static_cast<size_t>(positions[r]) * half;
        const float* sin = table.sin.data() + static_cast<size_t>(positions[r]) * half;
        for (int64_t h = 0; h < n_heads; h++) {
          float* u = x.f32() + r * x.cols + h * head_dim;
          for (int i = 0; i < half; i++) {
            const float a = u[i], b = u[i + half];
            u[i] = a * cos[i] - b * sin[i];
            u[i + half] = b * cos[i] + a * sin[i];
          }
        }
      }
    });
  }

  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionLayout& layout,
                 int n_heads, int n_kv_heads, int head_dim, Tensor& out) override {
    const int group = n_heads / n_kv_heads;
    const float scale = 1.f / std::sqrt(static_cast<float>(head_dim));
    const int64_t q_ld = q.cols, kv_ld = k.cols;
    if (static_cast<int>(scores_.size()) < threads_) scores_.resize(threads_);
    for (auto& sc : scores_) ensure_scratch(sc, static_cast<size_t>(layout.max_q_len) * layout.max_kv_len);
    const int64_t n_tasks = static_cast<int64_t>(layout.n_seqs) * n_heads;
    // Two GEMMs of [q, head_dim] x [head_dim, kv] per task.
    const int threads = threads_for(2.0 * q.rows * layout.max_kv_len * head_dim * n_heads);
    pool_.run(n_tasks, threads, [&](int64_t task, int thread) {
      const int s = static_cast<int>(task / n_heads), h = static_cast<int>(task % n_heads);
      const int32_t q0 = layout.q_start[s], nq = layout.q_start[s + 1] - q0;
      const int32_t k0 = layout.kv_start[s];
      const int32_t nk = (layout.kv_end ? layout.kv_end[s] : layout.kv_start[s + 1]) - k0;
      if (nq == 0) return;
      const int kvh = h / group;
      float* scores = scores_[thread].data();  // [nq, nk]
      // Block-causal: a query sees the keys of its own and earlier blocks. Keys past the last
      // query's block are never read (in a KV cache slot they may not be written yet).
      const int32_t bs = layout.block_size;
      int32_t visible = nk;
      if (bs > 0) {
        int32_t last = 0;
        for (int32_t i = 0; i < nq; i++) last = std::max(last, layout.q_positions[q0 + i]);
        visible = std::min(nk, (last / bs + 1) * bs);
      }
      sgemm_(false, true, nq, visible, head_dim, scale, q.f32() + q0 * q_ld + h * head_dim, q_ld,
             k.f32() + k0 * kv_ld + kvh * head_dim, kv_ld, 0.f, scores, visible);
      for (int32_t i = 0; i < nq; i++) {
        float* row = scores + static_cast<int64_t>(i) * visible;
        const int32_t seen =
            bs > 0 ? std::min(visible, (layout.q_positions[q0 + i] / bs + 1) * bs) : visible;
        float mx = -std::numeric_limits<float>::infinity();
        for (int32_t j = 0; j < seen; j++) mx = std::max(mx, row[j]);
        double sum = 0;
        for (int32_t j = 0; j < seen; j++) {
          row[j] = std::exp(row[j] - mx);
          sum += row[j];
        }
        const float inv = static_cast<float>(1.0 / sum);
        for (int32_t j = 0; j < seen; j++) row[j] *= inv;
        for (int32_t j = seen; j < visible; j++) row[j] = 0.f;
      }
      sgemm_(false, false, nq, head_dim, visible, 1.f, scores, visible,
             v.f32() + k0 * kv_ld + kvh * head_dim, kv_ld, 0.f, out.f32() + q0 * out.cols + h * head_dim,
             out.cols);
    });
  }

  void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) override {
    const int64_t n = gate.numel();
    parallel_ranges(n, n * 8, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; i++) {
        const float g = gate.f32()[i];
        out.f32()[i] = g / (1.f + std::exp(-g)) * up.f32()[i];
      }
    });
  }

  void add(Tensor& x, const Tensor& y) override {
    const int64_t n = x.numel();
    parallel_ranges(n, n, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; i++) x.f32()[i] += y.f32()[i];
    });
  }

  void gather_rows(const Tensor& x, const int32_t* rows, Tensor& out) override {
    parallel_ranges(out.rows, out.numel(), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; i++) {
        UNMASK_CHECK(rows[i] >= 0 && rows[i] < x.rows, "gather row " << rows[i] << " out of range");
        std::memcpy(out.f32() + i * out.cols, x.f32() + rows[i] * x.cols,
                    static_cast<size_t>(x.cols) * 4);
      }
    });
  }

  void scatter_rows(const Tensor& x, const int32_t* rows, Tensor& out) override {
    parallel_ranges(x.rows, x.numel(), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; i++) {
        UNMASK_CHECK(rows[i] >= 0 && rows[i] < out.rows,
                     "scatter row " << rows[i] << " out of range");
        std::memcpy(out.f32() + rows[i] * out.cols, x.f32() + i * x.cols,
                    static_cast<size_t>(x.cols) * 4);
      }
    });
  }

  void moe_route(const Tensor& router_logits, const float* expert_bias, const MoeRouter& router,
                 int32_t* expert_ids, float* expert_weights) override {
    UNMASK_CHECK(router_logits.cols == router.n_experts, "router logits are not n_experts wide");
    const int threads = threads_for_elements(router_logits.numel() * 16);
    if (static_cast<int>(route_scratch_.size()) < threads) route_scratch_.resize(threads);
    pool_.run(router_logits.rows, threads, [&](int64_t r, int t) {
      route_token(router_logits.f32() + r * router_logits.cols, expert_bias, router,
                  expert_ids + r * router.top_k, expert_weights + r * router.top_k, route_scratch_[t]);
    });
  }

  // Each expert runs once on the rows that chose it (gathered), through the same matmul as
  // dense layers; its outputs are added into their rows in expert order.
  void moe_experts(const Tensor& x, const int32_t* expert_ids, const float* expert_weights, int top_k,
                   const ExpertWeights& experts, Tensor& out) override {
    const int64_t n = x.rows, d = x.cols;
    const size_t n_experts = experts.gate.size();
    std::vector<std::vector<int64_t>> chosen(n_experts);  // (row * top_k + slot) per expert
    for (int64_t i = 0; i < n * top_k; i++) {
      const int32_t e = expert_ids[i];
      UNMASK_CHECK(e >= 0 && static_cast<size_t>(e) < n_experts, "expert id " << e << " out of range");
      chosen[static_cast<size_t>(e)].push_back(i);
    }
    std::memset(out.data, 0, out.n_bytes());
    for (size_t e = 0; e < n_experts; e++) {
      const std::vector<int64_t>& slots = chosen[e];
      if (slots.empty()) continue;
      const int64_t m = static_cast<int64_t>(slots.size()), hidden = experts.gate[e].rows;
      ensure_scratch(moe_in_, static_cast<size_t>(m * d));
      ensure_scratch(moe_gate_, static_cast<size_t>(m * hidden));
      ensure_scratch(moe_up_, static_cast<size_t>(m * hidden));
      ensure_scratch(moe_y_, static_cast<size_t>(m * d));
      auto view = [](std::vector<float>& v, int64_t rows, int64_t cols) {
        Tensor t;
        t.data = v.data();
        t.rows = rows;
        t.cols = cols;
        return t;
      };
      Tensor in = view(moe_in_, m, d), g = view(moe_gate_, m, hidden), u = view(moe_up_, m, hidden),
             y = view(moe_y_, m, d);
      for (int64_t i = 0; i < m; i++)
        std::memcpy(in.f32() + i * d, x.f32() + slots[i] / top_k * d, static_cast<size_t>(d) * 4);
      matmul(in, experts.gate[e], nullptr, g);
      matmul(in, experts.up[e], nullptr, u);
      swiglu(g, u, g);
      matmul(g, experts.down[e], nullptr, y);
      for (int64_t i = 0; i < m; i++) {
        const float w = expert_weights[slots[i]];
        float* o = out.f32() + slots[i] / top_k * d;
        const float* yi = y.f32() + i * d;
        for (int64_t c = 0; c < d; c++) o[c] += w * yi[c];
      }
    }
  }

  void pick(const Tensor& logits, const Tensor* uncond, const PickParams* params,
            const std::vector<int32_t>& banned, PickResult* out) override {
    const int64_t vocab = logits.cols;
    // note: a row costs about 8 passes over the vocabulary (more with top-p's sort).
    const int threads = threads_for_elements(logits.numel() * 8);
    if (static_cast<int>(pick_scratch_.size()) < threads) pick_scratch_.resize(threads);
    ensure_scratch(pick_rows_, static_cast<size_t>(threads) * vocab);
    pool_.run(logits.rows, threads, [&](int64_t r, int t) {
      float* row = pick_rows_.data() + static_cast<size_t>(t) * vocab;
      std::memcpy(row, logits.f32() + r * vocab, static_cast<size_t>(vocab) * 4);
      const float* u = nullptr;
      if (params[r].cfg_scale > 0.f && uncond) u = uncond->f32() + params[r].uncond_row * vocab;
      out[r] = pick_row(row, u, vocab, params[r], banned, pick_scratch_[t]);
    });
  }

 private:
  static void ensure_scratch(std::vector<float>& v, size_t n) {
    if (v.size() < n) v.resize(n);
  }

  // cos/sin of position * theta^(-2i/rotary_dim), computed in double and rounded to float once,
  // for positions [0, positions): a forward pass would otherwise spend 3% of its time in sincos.
  struct RopeTable {
    int rotary_dim = 0;
    float theta = 0.f;
    int32_t positions = 0;
    std::vector<float> cos, sin;  // [positions, rotary_dim / 2]
  };
  const RopeTable& rope_table(int rotary_dim, float theta, int32_t positions) {
    RopeTable& t = rope_table_;
    if (t.rotary_dim == rotary_dim && t.theta == theta && t.positions >= positions) return t;
    const int half = rotary_dim / 2;
    const int32_t n = std::max(positions, t.rotary_dim == rotary_dim && t.theta == theta ? 2 * t.positions : 0);
    t.rotary_dim = rotary_dim;
    t.theta = theta;
    t.positions = n;
    t.cos.resize(static_cast<size_t>(n) * half);
    t.sin.resize(static_cast<size_t>(n) * half);
    for (int i = 0; i < half; i++) {
      const double inv_freq = std::pow(static_cast<double>(theta), -2.0 * i / rotary_dim);
      for (int32_t p = 0; p < n; p++) {
        const double angle = p * inv_freq;
        t.cos[static_cast<size_t>(p) * half + i] = static_cast<float>(std::cos(angle));
        t.sin[static_cast<size_t>(p) * half + i] = static_cast<float>(std::sin(angle));
      }
    }
    return t;
  }

  int threads_for(double macs) const {
    return static_cast<int>(std::clamp(macs / kMacsPerThread, 1.0, static_cast<double>(threads_)));
  }
  int threads_for_elements(int64_t work) const {
    return static_cast<int>(std::clamp<int64_t>(work / kElementsPerThread, 1, threads_));
  }
  // fn(begin, end) over contiguous ranges of [0, n) on as many threads as `work` (element
  // updates) justifies.
  template <typename Fn>
  void parallel_ranges(int64_t n, int64_t work, Fn fn) {
    const int threads = static_cast<int>(std::min<int64_t>(threads_for_elements(work), n));
    if (threads <= 1) {
      if (n > 0) fn(0, n);
      return;
    }
    const int64_t n_chunks = std::min<int64_t>(n, kChunksPerThread * threads);
    const int64_t chunk = (n + n_chunks - 1) / n_chunks;
    pool_.run((n + chunk - 1) / chunk, threads, [&](int64_t t, int) {
      const int64_t begin = std::min(n, t * chunk), end = std::min(n, begin + chunk);
      if (end > begin) fn(begin, end);
    });
  }
  // A weight of the model (upload_weight, random_weight) may be packed for oneDNN at its first
  // matmul; a tensor that merely reuses its address later is registered anew, dropping the pack.
  void register_weight(const Tensor& t) {
    if (!t.data) return;
    packed_.erase(t.data);
    weights_[t.data] = {t.rows, t.cols};
  }
  // The weight's packed panels, packing it now if it is an f32 weight of at least one panel's
  // worth of rows and its copy fits the widening budget; nullptr: OpenBLAS multiplies it.
  const PackedWeight* packed_for(const Tensor& w) {
    if (w.dtype != DType::F32 || w.rows < PackedWeight::kPanelRows / 2) return nullptr;
    if (auto it = packed_.find(w.data); it != packed_.end()) return it->second.get();
    auto reg = weights_.find(w.data);
    if (reg == weights_.end() || reg->second != std::make_pair(w.rows, w.cols) || !onednn_available())
      return nullptr;
    std::unique_ptr<PackedWeight> packed;
    if (claim_budget(w.numel())) {
      packed = pack_weight(w.f32(), w.rows, w.cols);
      packed_weights_ += packed != nullptr;
    }
    // note: a weight left unpacked (budget spent) is remembered as such, so it is not retried.
    return (packed_[w.data] = std::move(packed)).get();
  }

  // Takes `elements` f32 values of the widening budget; false when they do not fit.
  bool claim_widening(int64_t elements) {
    if (!claim_budget(elements)) {
      tiled_weights_++;
      return false;
    }
    widened_weights_++;
    return true;
  }
  // Takes `elements` f32 values of the budget that widened and packed copies share.
  bool claim_budget(int64_t elements) {
    const size_t bytes = static_cast<size_t>(elements) * 4;
    if (widened_bytes_ + bytes > widen_budget_) return false;
    widened_bytes_ += bytes;
    return true;
  }

  int threads_ = 1;
  SgemmFn sgemm_ = nullptr;
  ThreadPool pool_;
  size_t widen_budget_;
  size_t widened_bytes_ = 0;
  int widened_weights_ = 0, tiled_weights_ = 0, packed_weights_ = 0;
  std::unordered_map<const void*, std::pair<int64_t, int64_t>> weights_;  // data -> [rows, cols]
  std::unordered_map<const void*, std::unique_ptr<PackedWeight>> packed_;
  std::map<void*, size_t> allocations_;
  size_t live_bytes_ = 0, peak_bytes_ = 0;
  std::vector<std::vector<float>> weight_tiles_;  // per thread: [tile_rows, in] widened weights
  std::vector<std::vector<float>> scores_;        // per thread: [max_q_len, max_kv_len]
  RopeTable rope_table_;
  std::vector<std::vector<float>> route_scratch_;          // per thread
  std::vector<float> moe_in_, moe_gate_, moe_up_, moe_y_;  // one expert's rows at a time
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

std::unique_ptr<Backend> make_cpu_backend(int threads, size_t widen_budget_bytes) {
  return std::make_unique<CpuBackend>(threads, widen_budget_bytes);
}

}  // namespace unmask
