// out = x · wᵀ (+ bias) with cuBLAS: 16-bit weights on tensor cores (fp32 accumulate), fp32 weights in plain fp32.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>

#include "common.cuh"

namespace unmask::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ void store_16bit(__nv_bfloat16* p, float x) { *p = __float2bfloat16_rn(x); }
__device__ __forceinline__ void store_16bit(__half* p, float x) { *p = __float2half_rn(x); }

// Activations rounded (to nearest even) to the weights' 16-bit type, so cuBLAS sees one type.
template <class T>
__global__ void to_16bit_kernel(const float* x, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    store_16bit(out + i, x[i]);
}

__global__ void add_bias_kernel(float* out, const void* bias, DType dtype, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = i % cols;
    float b;
    switch (dtype) {
      case DType::BF16: b = __bfloat162float(static_cast<const __nv_bfloat16*>(bias)[c]); break;
      case DType::F16: b = __half2float(static_cast<const __half*>(bias)[c]); break;
      default: b = static_cast<const float*>(bias)[c]; break;
    }
    out[i] += b;
  }
}

unsigned stride_blocks(const Context& ctx, int64_t n) {
  const int64_t needed = (n + kThreads - 1) / kThreads;
  const int64_t cap = int64_t{std::max(ctx.sm_count, 1)} * 32;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(needed, cap)));
}

}  // namespace

void matmul(Context& ctx, const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out,
            void* scratch) {
  UNMASK_CHECK(x.cols == w.cols && out.rows == x.rows && out.cols == w.rows,
               "matmul shape mismatch: x [" << x.rows << "," << x.cols << "] w [" << w.rows << ","
                                            << w.cols << "] out [" << out.rows << "," << out.cols << "]");
  UNMASK_CHECK(x.dtype == DType::F32 && out.dtype == DType::F32, "matmul: activations must be F32");
  const int64_t n = x.rows, k = x.cols, m = w.rows;
  if (n == 0 || m == 0) return;
  UNMASK_CHECK(n <= INT_MAX && k <= INT_MAX && m <= INT_MAX, "matmul: dimension over 2^31");
  const float alpha = 1.f, beta = 0.f;
  // Row-major out [n, m] = x [n, k] · w [m, k]ᵀ is column-major outᵀ [m, n] = w · xᵀ, where the
  // row-major w reads as a column-major [k, m] matrix (so op T) and x as [k, n] (op N).
  if (w.dtype == DType::F32) {
    // note: CUBLAS_COMPUTE_32F with the default math mode never uses TF32, so CUDA and CPU agree.
    CUBLAS_CHECK(cublasGemmEx(ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(m),
                              static_cast<int>(n), static_cast<int>(k), &alpha, w.data, CUDA_R_32F,
                              static_cast<int>(k), x.data, CUDA_R_32F, static_cast<int>(k), &beta,
                              out.data, CUDA_R_32F, static_cast<int>(m), CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
  } else {
    UNMASK_CHECK(scratch, "matmul: no scratch for the 16-bit activations");
    const cudaDataType_t type = w.dtype == DType::BF16 ? CUDA_R_16BF : CUDA_R_16F;
    const int64_t count = n * k;
    if (w.dtype == DType::BF16) {
      to_16bit_kernel<<<stride_blocks(ctx, count), kThreads, 0, ctx.stream>>>(
          x.f32(), static_cast<__nv_bfloat16*>(scratch), count);
    } else {
      to_16bit_kernel<<<stride_blocks(ctx, count), kThreads, 0, ctx.stream>>>(
          x.f32(), static_cast<__half*>(scratch), count);
    }
    CUDA_CHECK_LAUNCH();
    CUBLAS_CHECK(cublasGemmEx(ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(m),
                              static_cast<int>(n), static_cast<int>(k), &alpha, w.data, type,
                              static_cast<int>(k), scratch, type, static_cast<int>(k), &beta,
                              out.data, CUDA_R_32F, static_cast<int>(m), CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
  }
  if (bias && bias->data) {
    UNMASK_CHECK(bias->numel() == m, "matmul: bias has " << bias->numel() << " entries, want " << m);
    add_bias_kernel<<<stride_blocks(ctx, n * m), kThreads, 0, ctx.stream>>>(out.f32(), bias->data,
                                                                            bias->dtype, n, m);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace unmask::cuda
