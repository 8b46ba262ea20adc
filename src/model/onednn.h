// oneDNN's f32 matmul over weights packed once at load, for the CPU backend's GEMMs with
// constant weights: OpenBLAS repacks a weight panel on every call, which costs about a fifth of a
// small model's forward; oneDNN's brgemm kernels read a layout prepared once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace unmask {

// A weight W[rows, k] (row-major f32) in oneDNN's blocked layout, cut into panels of
// kPanelRows rows: a panel is the unit of work one thread takes, as a tile of output columns.
class PackedWeight {
 public:
  static constexpr int64_t kPanelRows = 128;
  ~PackedWeight();
  int64_t rows() const { return rows_; }
  int64_t k() const { return k_; }
  int panels() const { return static_cast<int>(panels_.size()); }
  size_t bytes() const { return bytes_; }

  // out[n, panel's rows] (row stride `ldo` floats, starting at the panel's first output column)
  // = x[n, k] (row-major, stride k) times the panel transposed. Runs on the calling thread
  // only; safe to call from many threads at once. Throws Error (kExitRuntime) on a oneDNN failure.
  void multiply(int panel, const float* x, int64_t n, float* out, int64_t ldo) const;

 private:
  friend std::unique_ptr<PackedWeight> pack_weight(const float* w, int64_t rows, int64_t k);
  struct Panel;
  int64_t rows_ = 0, k_ = 0;
  size_t bytes_ = 0;
  std::vector<std::unique_ptr<Panel>> panels_;
};

// Whether oneDNN is there to use: libdnnl.so.2 loads and runs a matmul on this CPU, and
// UNMASK_ONEDNN is not 0. Loaded on the first call (dlopen), never at start-up.
bool onednn_available();
// "oneDNN 2.6.3, brg:avx512_core kernels", or why it is not used.
std::string onednn_description();

// oneDNN's own sgemm (row-major, single-threaded on the calling thread), with blas.h's SgemmFn
// signature; nullptr when oneDNN is not available. For products of activations (attention),
// where there is nothing to pack.
using OneDnnSgemm = void (*)(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a,
                             int lda, const float* b, int ldb, float beta, float* c, int ldc);
OneDnnSgemm onednn_sgemm();

// Packs W[rows, k]; nullptr when oneDNN is not available. The result holds its own copy.
std::unique_ptr<PackedWeight> pack_weight(const float* w, int64_t rows, int64_t k);

}  // namespace unmask
