// CUDA/cuBLAS error checks, the context every launcher gets, and the launchers' declarations.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstring>
#include <string>

#include "common.h"
#include "model/backend.h"
#include "plan.h"

namespace unmask::cuda {

[[noreturn]] inline void fail_call(const char* call, const char* file, int line, const char* what) {
  const char* slash = std::strrchr(file, '/');
  throw Error(kExitRuntime, std::string("cuda: ") + call + " failed at " + (slash ? slash + 1 : file) +
                                ":" + std::to_string(line) + ": " + what);
}

}  // namespace unmask::cuda

#define CUDA_CHECK(call)                                                              \
  do {                                                                                \
    const cudaError_t unmask_cuda_err_ = (call);                                      \
    if (unmask_cuda_err_ != cudaSuccess)                                              \
      ::unmask::cuda::fail_call(#call, __FILE__, __LINE__, cudaGetErrorString(unmask_cuda_err_)); \
  } while (0)

#define CUBLAS_CHECK(call)                                                            \
  do {                                                                                \
    const cublasStatus_t unmask_cublas_st_ = (call);                                  \
    if (unmask_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                   \
      ::unmask::cuda::fail_call(#call, __FILE__, __LINE__, cublasGetStatusString(unmask_cublas_st_)); \
  } while (0)

// After a kernel launch: configuration errors surface here, faults at the next sync.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

namespace unmask::cuda {

// Bits of the device-side error word: kernels cannot throw, so they flag bad indices here and
// the backend turns the word into an Error at its next host sync.
enum DeviceError : int {
  kErrEmbedId = 1,    // embed: token id outside the table
  kErrGatherRow = 2,  // gather_rows: row index outside x
  kErrExpertId = 4,   // moe_experts: expert id outside the layer's experts
};

// What launchers need from the backend; owned by it (no global state).
struct Context {
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  int sm_count = 0;
  size_t smem_optin = 0;  // max dynamic shared memory per block after opt-in
  int* error_word = nullptr;  // device int, DeviceError bits
  // Shared-memory limit raised, per [block-causal][variant] attention kernel.
  bool attention_ready[2][cuda_plan::kAttentionVariantCount] = {};
};

// elementwise.cu
void embed(Context& ctx, const int32_t* ids, const Tensor& table, Tensor& out);
void swiglu(Context& ctx, const Tensor& gate, const Tensor& up, Tensor& out);
void add(Context& ctx, Tensor& x, const Tensor& y);
void gather_rows(Context& ctx, const Tensor& x, const int32_t* rows, Tensor& out);
void scatter_rows(Context& ctx, const Tensor& x, const int32_t* rows, Tensor& out);
// data [n] of dtype: element i = synthetic_weight(seed, i, scale) rounded to dtype.
void fill_synthetic(Context& ctx, void* data, DType dtype, int64_t n, uint64_t seed, float scale);
// A kernel that does nothing: cudaFuncGetAttributes on it says whether this build runs here.
const void* probe_kernel_address();

// norm.cu
void rmsnorm(Context& ctx, const Tensor& x, const Tensor& w, float eps, Tensor& out);

// rope.cu
void rope(Context& ctx, Tensor& x, const int32_t* positions, int head_dim, int rotary_dim, float theta);

// matmul.cu. `scratch` holds cuda_plan::matmul_scratch_bytes(x.rows, x.cols, w.dtype) bytes.
void matmul(Context& ctx, const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out,
            void* scratch);

// attention.cu
void attention(Context& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
               const AttentionLayout& layout, int n_heads, int n_kv_heads, int head_dim,
               Tensor& out);

// moe_route.cu. Arguments as Backend::moe_route; throws on a router the kernel cannot run
// (moe::router_problem).
void moe_route(Context& ctx, const Tensor& router_logits, const float* expert_bias, const MoeRouter& router,
               int32_t* expert_ids, float* expert_weights);

// moe.cu. moe_check throws unless the shapes and dtypes suit moe_experts. weight_table: device
// array of 3 * n_experts pointers (every gate, then every up, then every down weight's data);
// scratch: plan.bytes of device memory, plan = cuda_plan::moe_plan(chunk, top_k, n_experts,
// x.cols, hidden) with chunk = cuda_plan::moe_chunk_rows(x.rows, ...): the rows go through in
// chunks of that many. Arguments otherwise as Backend::moe_experts.
void moe_check(const Tensor& x, int top_k, const ExpertWeights& experts, const Tensor& out);
void moe_experts(Context& ctx, const Tensor& x, const int32_t* expert_ids, const float* expert_weights,
                 int top_k, const ExpertWeights& experts, const void* const* weight_table,
                 const cuda_plan::MoePlan& plan, void* scratch, Tensor& out);

// pick.cu. All pointers are device memory; out[r] for r < logits.rows.
void pick(Context& ctx, const Tensor& logits, const Tensor* uncond, const PickParams* params,
          const int32_t* banned, int n_banned, PickResult* out);

}  // namespace unmask::cuda
