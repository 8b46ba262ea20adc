// RMSNorm: one block per row, sum of squares in double like the CPU reference, output fp32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common.cuh"

namespace unmask::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float weight_at(const void* w, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(w)[i]);
    case DType::F16: return __half2float(static_cast<const __half*>(w)[i]);
    default: return static_cast<const float*>(w)[i];
  }
}

// out may alias x: each element is read before the same thread writes it.
__global__ void __launch_bounds__(kThreads)
rmsnorm_kernel(const float* x, const void* w, DType w_dtype, float eps, int64_t d, float* out) {
  __shared__ double partial[kThreads / 32];
  const float* xr = x + blockIdx.x * d;
  float* o = out + blockIdx.x * d;
  double sum = 0;
  for (int64_t i = threadIdx.x; i < d; i += kThreads) sum += static_cast<double>(xr[i]) * xr[i];
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = sum;
  __syncthreads();
  double total = 0;
  for (int i = 0; i < kThreads / 32; i++) total += partial[i];
  const float scale = static_cast<float>(1.0 / sqrt(total / static_cast<double>(d) + eps));
  // note: (x * scale) * w as two roundings, like the CPU loop.
  for (int64_t i = threadIdx.x; i < d; i += kThreads)
    o[i] = __fmul_rn(__fmul_rn(xr[i], scale), weight_at(w, w_dtype, i));
}

}  // namespace

void rmsnorm(Context& ctx, const Tensor& x, const Tensor& w, float eps, Tensor& out) {
  UNMASK_CHECK(w.numel() == x.cols && out.cols == x.cols && out.rows == x.rows,
               "rmsnorm shape mismatch");
  if (x.rows == 0) return;
  rmsnorm_kernel<<<static_cast<unsigned>(x.rows), kThreads, 0, ctx.stream>>>(
      x.f32(), w.data, w.dtype, eps, x.cols, out.f32());
  CUDA_CHECK_LAUNCH();
}

}  // namespace unmask::cuda
