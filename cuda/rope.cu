// Rotary position embedding in place: rotate-half pairs (i, i + rotary_dim/2) over the first rotary_dim
// dimensions of each head (partial RoPE), angles in double like the CPU.
#include <cuda_runtime.h>

#include "common.cuh"

namespace unmask::cuda {
namespace {

constexpr int kThreads = 256;

// One thread per (row, pair index i): the angle is computed once and applied to every head.
// Dimensions [rotary_dim, head_dim) of a head are never touched.
__global__ void rope_kernel(float* x, int64_t rows, int64_t ld, int n_heads, const int32_t* positions,
                            int head_dim, int rotary_dim, float theta) {
  const int half = rotary_dim / 2;
  const int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (t >= rows * half) return;
  const int64_t r = t / half;
  const int i = static_cast<int>(t - r * half);
  // note: rotary_dim == head_dim gives the same double expression as full RoPE, bit for bit.
  const double inv_freq = pow(static_cast<double>(theta), -2.0 * i / rotary_dim);
  const double angle = positions[r] * inv_freq;
  const float c = static_cast<float>(cos(angle));
  const float s = static_cast<float>(sin(angle));
  for (int h = 0; h < n_heads; h++) {
    float* u = x + r * ld + static_cast<int64_t>(h) * head_dim;
    const float a = u[i], b = u[i + half];
    // note: explicit roundings so no FMA contraction makes CUDA differ from the CPU.
    u[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    u[i + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
  }
}

}  // namespace

void rope(Context& ctx, Tensor& x, const int32_t* positions, int head_dim, int rotary_dim, float theta) {
  UNMASK_CHECK(head_dim > 0 && head_dim % 2 == 0 && x.cols % head_dim == 0,
               "rope: width " << x.cols << " is not a multiple of an even head_dim " << head_dim);
  UNMASK_CHECK(rotary_dim >= 2 && rotary_dim <= head_dim && rotary_dim % 2 == 0,
               "rope: rotary_dim " << rotary_dim << " must be even and in [2, head_dim " << head_dim << "]");
  const int64_t n = x.rows * (rotary_dim / 2);
  if (n == 0) return;
  const unsigned blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  rope_kernel<<<blocks, kThreads, 0, ctx.stream>>>(x.f32(), x.rows, x.cols,
                                                   static_cast<int>(x.cols / head_dim), positions,
                                                   head_dim, rotary_dim, theta);
  CUDA_CHECK_LAUNCH();
}

}  // namespace unmask::cuda
