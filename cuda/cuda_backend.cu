// The CUDA Backend: device memory accounting, one stream, cuBLAS, staged uploads; ops launch cuda/*.cu kernels.
#include "cuda_backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <unordered_map>
#include <vector>

#include "common.cuh"
#include "step_graph.h"

#define UNMASK_STRINGIFY(...) #__VA_ARGS__
#define UNMASK_XSTRINGIFY(...) UNMASK_STRINGIFY(__VA_ARGS__)
#if defined(__CUDA_ARCH_LIST__)
#define UNMASK_ARCH_LIST UNMASK_XSTRINGIFY(__CUDA_ARCH_LIST__)
#else
#define UNMASK_ARCH_LIST "unknown"
#endif

namespace unmask {
namespace {

std::string mib(size_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

// Recordings kept at once: a batch job meets a handful of shapes (requests joining and leaving).
constexpr size_t kStepGraphs = 16;

// UNMASK_CUDA_GRAPHS=0 runs every step eagerly (for debugging and for measuring the graphs' gain).
size_t step_graph_capacity() {
  const char* env = std::getenv("UNMASK_CUDA_GRAPHS");
  return env && std::string(env) == "0" ? 0 : kStepGraphs;
}

// note: one stream, so every op is ordered after the last; a step's only host sync is pick's
// results copy. The layers of a step are captured as a CUDA graph once their shapes repeat and
// replayed from then on (Model::forward keys them; cuda/step_graph.h decides).
class CudaBackend final : public Backend {
 public:
  CudaBackend()
      : graphs_(step_graph_capacity(), [](cudaGraphExec_t& g) { cudaGraphExecDestroy(g); }) {
    try {
      init();
    } catch (...) {
      release();
      throw;
    }
  }
  ~CudaBackend() override { release(); }

  std::string name() const override { return "cuda"; }
  std::string device() const override { return device_; }

  void* alloc(size_t bytes) override {
    UNMASK_CHECK(!capturing_, "cuda: allocation while recording a step");
    void* ptr = nullptr;
    const size_t rounded = cuda_plan::round_up(std::max<size_t>(bytes, 1), 256);
    const cudaError_t err = cudaMalloc(&ptr, rounded);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear it: an allocation failure leaves the context usable
      size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      fail_runtime("cuda: out of device memory allocating " + mib(bytes) + " (" + mib(free_bytes) +
                   " free of " + mib(total_bytes) + "; " + mib(live_bytes_) +
                   " held by unmask): use a shorter canvas, fewer requests per batch, or --backend cpu");
    }
    allocations_[ptr] = rounded;
    live_bytes_ += rounded;
    peak_bytes_ = std::max(peak_bytes_, live_bytes_);
    return ptr;
  }

  void free(void* ptr) override {
    auto it = allocations_.find(ptr);
    if (it == allocations_.end()) return;
    // A recording may point into this memory: drop them all (buffers move rarely).
    graphs_.clear();
    // note: unchecked, as Model's destructor frees through here; a broken context reports at
    // the next checked call instead of terminating the program from a destructor.
    cudaStreamSynchronize(ctx_.stream);  // kernels in flight may still use it
    cudaFree(ptr);
    cudaGetLastError();
    live_bytes_ -= it->second;
    allocations_.erase(it);
  }

  Tensor upload_weight(const Tensor& host) override {
    if (!host.data) return host;
    Tensor t = host;
    t.data = alloc(host.n_bytes());
    copy_weight(t.data, host.data, host.n_bytes());
    return t;
  }

  void upload(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    UNMASK_CHECK(!capturing_, "cuda: upload while recording a step");
    const cuda_plan::StagingStep step = cuda_plan::staging_step(staging_used_, staging_bytes_, bytes);
    if (step.direct) {
      CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx_.stream));
      CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
      staging_used_ = 0;
      return;
    }
    if (step.sync_first) {
      CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
      staging_used_ = 0;
    }
    if (step.grow_to) {
      if (staging_) CUDA_CHECK(cudaFreeHost(staging_));
      staging_ = nullptr;
      staging_bytes_ = 0;
      CUDA_CHECK(cudaMallocHost(&staging_, step.grow_to));
      staging_bytes_ = step.grow_to;
    }
    // note: pinned staging keeps the copy asynchronous; from pageable memory the driver would
    // synchronise the stream first, stalling every step.
    std::memcpy(staging_ + step.offset, src, bytes);
    CUDA_CHECK(cudaMemcpyAsync(dst, staging_ + step.offset, bytes, cudaMemcpyHostToDevice, ctx_.stream));
    staging_used_ = step.offset + bytes;
  }

  void download(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx_.stream));
    sync_and_check();
  }

  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes > 0) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx_.stream));
  }

  size_t peak_bytes() const override { return peak_bytes_; }
  void reset_peak() override { peak_bytes_ = live_bytes_; }
  void release_scratch() override {
    for (auto [ptr, capacity] : {std::pair{&act_scratch_, &act_scratch_bytes_},
                                 std::pair{&pick_params_, &pick_params_bytes_},
                                 std::pair{&pick_banned_, &pick_banned_bytes_},
                                 std::pair{&pick_results_, &pick_results_bytes_},
                                 std::pair{&moe_scratch_, &moe_scratch_bytes_}}) {
      if (*ptr) free(*ptr);
      *ptr = nullptr;
      *capacity = 0;
    }
    // Rebuilt on each layer's next (eager) use; dropping them bounds what models unloaded since
    // leave behind.
    for (auto& [pointers, device] : expert_tables_) free(device);
    expert_tables_.clear();
  }

  Tensor random_weight(int64_t rows, int64_t cols, DType dtype, uint64_t seed, float scale) override {
    Tensor t;
    t.rows = rows;
    t.cols = cols;
    t.dtype = dtype;
    t.data = alloc(t.n_bytes());
    cuda::fill_synthetic(ctx_, t.data, dtype, t.numel(), seed, scale);
    return t;
  }

  void synchronize() override { sync_and_check(); }

  bool replay_step(uint64_t key) override {
    pending_ = graphs_.next(key);
    if (pending_ != cuda_plan::StepAction::Replay) return false;
    CUDA_CHECK(cudaGraphLaunch(graphs_.recording(key), ctx_.stream));
    replays_++;
    return true;
  }

  bool begin_step(uint64_t /*key*/) override {
    if (pending_ != cuda_plan::StepAction::Capture) return false;
    // Thread-local mode: only this thread's calls are checked for capture safety.
    if (cudaStreamBeginCapture(ctx_.stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    capturing_ = true;
    return true;
  }

  bool end_step(uint64_t key) override {
    capturing_ = false;
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    const bool recorded = cudaStreamEndCapture(ctx_.stream, &graph) == cudaSuccess && graph &&
                          cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
    if (graph) cudaGraphDestroy(graph);
    if (!recorded) {
      // This shape runs eagerly from now on; the caller runs the ops that were not executed.
      cudaGetLastError();
      graphs_.failed(key);
      return false;
    }
    graphs_.store(key, exec);
    CUDA_CHECK(cudaGraphLaunch(exec, ctx_.stream));
    return true;
  }

  void abort_step() override {
    if (!capturing_) return;
    capturing_ = false;
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(ctx_.stream, &graph);
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
  }

  int64_t replayed_steps() const override { return replays_; }

  void embed(const int32_t* ids, const Tensor& table, Tensor& out) override {
    cuda::embed(ctx_, ids, table, out);
  }
  void rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
    cuda::rmsnorm(ctx_, x, w, eps, out);
  }
  void matmul(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out) override {
    ensure(act_scratch_, act_scratch_bytes_, cuda_plan::matmul_scratch_bytes(x.rows, x.cols, w.dtype));
    cuda::matmul(ctx_, x, w, bias, out, act_scratch_);
  }
  void rope(Tensor& x, const int32_t* positions, int head_dim, int rotary_dim, float theta) override {
    cuda::rope(ctx_, x, positions, head_dim, rotary_dim, theta);
  }
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionLayout& layout,
                 int n_heads, int n_kv_heads, int head_dim, Tensor& out) override {
    cuda::attention(ctx_, q, k, v, layout, n_heads, n_kv_heads, head_dim, out);
  }
  void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) override {
    cuda::swiglu(ctx_, gate, up, out);
  }
  void add(Tensor& x, const Tensor& y) override { cuda::add(ctx_, x, y); }
  void moe_route(const Tensor& router_logits, const float* expert_bias, const MoeRouter& router,
                 int32_t* expert_ids, float* expert_weights) override {
    cuda::moe_route(ctx_, router_logits, expert_bias, router, expert_ids, expert_weights);
  }
  void moe_experts(const Tensor& x, const int32_t* expert_ids, const float* expert_weights, int top_k,
                   const ExpertWeights& experts, Tensor& out) override {
    cuda::moe_check(x, top_k, experts, out);
    if (x.rows == 0) return;
    const int64_t hidden = experts.gate[0].rows;
    const int64_t chunk = cuda_plan::moe_chunk_rows(x.rows, top_k, x.cols, hidden);
    const cuda_plan::MoePlan plan =
        cuda_plan::moe_plan(chunk, top_k, static_cast<int>(experts.gate.size()), x.cols, hidden);
    ensure(moe_scratch_, moe_scratch_bytes_, plan.bytes);
    cuda::moe_experts(ctx_, x, expert_ids, expert_weights, top_k, experts, expert_table(experts), plan,
                      moe_scratch_, out);
  }
  void scatter_rows(const Tensor& x, const int32_t* rows, Tensor& out) override {
    cuda::scatter_rows(ctx_, x, rows, out);
  }
  void gather_rows(const Tensor& x, const int32_t* rows, Tensor& out) override {
    cuda::gather_rows(ctx_, x, rows, out);
  }

  void pick(const Tensor& logits, const Tensor* uncond, const PickParams* params,
            const std::vector<int32_t>& banned, PickResult* out) override {
    const int64_t rows = logits.rows;
    if (rows == 0) return;
    const Tensor* u = uncond && uncond->rows > 0 ? uncond : nullptr;
    for (int64_t r = 0; r < rows; r++) {
      if (params[r].cfg_scale > 0.f && u)
        UNMASK_CHECK(params[r].uncond_row >= 0 && params[r].uncond_row < u->rows,
                     "pick: uncond_row " << params[r].uncond_row << " outside " << u->rows << " rows");
    }
    const size_t params_bytes = static_cast<size_t>(rows) * sizeof(PickParams);
    const size_t results_bytes = static_cast<size_t>(rows) * sizeof(PickResult);
    const size_t banned_bytes = banned.size() * sizeof(int32_t);
    ensure(pick_params_, pick_params_bytes_, params_bytes);
    ensure(pick_banned_, pick_banned_bytes_, std::max<size_t>(banned_bytes, sizeof(int32_t)));
    ensure(pick_results_, pick_results_bytes_, results_bytes);
    if (host_results_bytes_ < results_bytes) {
      if (host_results_) CUDA_CHECK(cudaFreeHost(host_results_));
      host_results_ = nullptr;
      host_results_bytes_ = 0;
      const size_t grown = cuda_plan::grow_bytes(0, results_bytes);
      CUDA_CHECK(cudaMallocHost(&host_results_, grown));
      host_results_bytes_ = grown;
    }
    upload(pick_params_, params, params_bytes);
    upload(pick_banned_, banned.data(), banned_bytes);
    cuda::pick(ctx_, logits, u, static_cast<const PickParams*>(pick_params_),
               static_cast<const int32_t*>(pick_banned_), static_cast<int>(banned.size()),
               static_cast<PickResult*>(pick_results_));
    CUDA_CHECK(cudaMemcpyAsync(host_results_, pick_results_, results_bytes, cudaMemcpyDeviceToHost,
                               ctx_.stream));
    sync_and_check();
    // note: token -1 (every token banned, or finite false) is the sampler's to report, as on
    // the CPU.
    std::memcpy(out, host_results_, results_bytes);
  }

 private:
  void init() {
    std::string why;
    if (!cuda_device_usable(&why)) fail_runtime("cuda: no usable device: " + why);
    CUDA_CHECK(cudaSetDevice(0));
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    int smem_optin = 0, driver = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
    CUDA_CHECK(cudaDriverGetVersion(&driver));
    ctx_.sm_count = prop.multiProcessorCount;
    ctx_.smem_optin = static_cast<size_t>(smem_optin);
    char memory[32];
    std::snprintf(memory, sizeof memory, "%.1f GiB", static_cast<double>(prop.totalGlobalMem) / (1 << 30));
    device_ = std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) +
              ", " + std::to_string(prop.multiProcessorCount) + " SMs, " + memory + ", driver " +
              std::to_string(driver / 1000) + "." + std::to_string(driver % 1000 / 10) + ")";

    CUDA_CHECK(cudaStreamCreateWithFlags(&ctx_.stream, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasCreate(&ctx_.cublas));
    CUBLAS_CHECK(cublasSetStream(ctx_.cublas, ctx_.stream));
    CUBLAS_CHECK(cublasSetMathMode(ctx_.cublas, CUBLAS_DEFAULT_MATH));  // no TF32
    // An explicit workspace: cuBLAS then never allocates inside a step.
    cublas_workspace_ = alloc(cuda_plan::kCublasWorkspaceBytes);
    CUBLAS_CHECK(cublasSetWorkspace(ctx_.cublas, cublas_workspace_, cuda_plan::kCublasWorkspaceBytes));
    ctx_.error_word = static_cast<int*>(alloc(sizeof(int)));
    CUDA_CHECK(cudaMemsetAsync(ctx_.error_word, 0, sizeof(int), ctx_.stream));
    CUDA_CHECK(cudaMallocHost(&host_error_, sizeof(int)));
    *host_error_ = 0;
    for (cudaEvent_t& e : weight_events_) CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
  }

  // Never throws: runs from the destructor and from a failed constructor.
  void release() {
    abort_step();
    if (ctx_.stream) cudaStreamSynchronize(ctx_.stream);
    graphs_.clear();
    if (ctx_.cublas) cublasDestroy(ctx_.cublas);
    ctx_.cublas = nullptr;
    for (auto& [ptr, bytes] : allocations_) cudaFree(ptr);
    allocations_.clear();
    for (cudaEvent_t& e : weight_events_) {
      if (e) cudaEventDestroy(e);
      e = nullptr;
    }
    for (char*& b : weight_buffers_) {
      if (b) cudaFreeHost(b);
      b = nullptr;
    }
    if (staging_) cudaFreeHost(staging_);
    if (host_results_) cudaFreeHost(host_results_);
    if (host_error_) cudaFreeHost(host_error_);
    staging_ = nullptr;
    host_results_ = nullptr;
    host_error_ = nullptr;
    if (ctx_.stream) cudaStreamDestroy(ctx_.stream);
    ctx_.stream = nullptr;
  }

  // Grows a backend-internal device buffer to hold `needed` bytes (rare: free + cudaMalloc).
  void ensure(void*& ptr, size_t& capacity, size_t needed) {
    const size_t grown = cuda_plan::grow_bytes(capacity, needed);
    if (grown == 0) return;
    // A step is recorded only on its second sighting, after the first one grew what it needs.
    UNMASK_CHECK(!capturing_, "cuda: scratch growth while recording a step");
    if (ptr) free(ptr);
    ptr = nullptr;
    capacity = 0;
    ptr = alloc(grown);
    capacity = grown;
  }

  // Waits for the stream, then turns a device-side error flag into an Error.
  void sync_and_check() {
    CUDA_CHECK(cudaMemcpyAsync(host_error_, ctx_.error_word, sizeof(int), cudaMemcpyDeviceToHost,
                               ctx_.stream));
    CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    staging_used_ = 0;
    const int flags = *host_error_;
    if (flags == 0) return;
    *host_error_ = 0;
    CUDA_CHECK(cudaMemsetAsync(ctx_.error_word, 0, sizeof(int), ctx_.stream));
    if (flags & cuda::kErrEmbedId) fail_runtime("cuda: embed got a token id outside the embedding table");
    if (flags & cuda::kErrExpertId) fail_runtime("cuda: moe_experts got an expert id outside the layer's experts");
    fail_runtime("cuda: gather_rows got a row index outside its input");
  }

  // The device array of an expert layer's weight pointers (every gate, every up, every down), built
  // on the layer's first use, which is eager (a step is recorded on its second sighting): weights
  // never move after upload. Keyed by the whole pointer list rather than the first gate's address
  // alone, so a table is valid exactly when found, even after weights were freed and the memory
  // reused. The lookup compares lists that differ almost always in their first entry.
  const void* const* expert_table(const ExpertWeights& experts) {
    std::vector<const void*> pointers;
    pointers.reserve(3 * experts.gate.size());
    for (const std::vector<Tensor>* part : {&experts.gate, &experts.up, &experts.down})
      for (const Tensor& t : *part) pointers.push_back(t.data);
    if (auto it = expert_tables_.find(pointers); it != expert_tables_.end())
      return static_cast<const void* const*>(it->second);
    UNMASK_CHECK(!capturing_, "cuda: an expert layer first seen while recording a step");
    const size_t bytes = pointers.size() * sizeof(const void*);
    void* device = alloc(bytes);
    upload(device, pointers.data(), bytes);
    expert_tables_.emplace(std::move(pointers), device);
    return static_cast<const void* const*>(device);
  }

  // Host (pageable, e.g. mmap) -> device through two pinned buffers, so the copy of one chunk
  // overlaps the memcpy into the other.
  void copy_weight(void* dst, const void* src, size_t bytes) {
    constexpr size_t kChunk = cuda_plan::kWeightChunkBytes;
    for (char*& b : weight_buffers_)
      if (!b) CUDA_CHECK(cudaMallocHost(&b, kChunk));
    for (size_t offset = 0; offset < bytes; offset += kChunk) {
      const int b = static_cast<int>(weight_chunks_++ % 2);
      const size_t n = std::min(kChunk, bytes - offset);
      CUDA_CHECK(cudaEventSynchronize(weight_events_[b]));  // its previous chunk has left
      std::memcpy(weight_buffers_[b], static_cast<const char*>(src) + offset, n);
      CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + offset, weight_buffers_[b], n,
                                 cudaMemcpyHostToDevice, ctx_.stream));
      CUDA_CHECK(cudaEventRecord(weight_events_[b], ctx_.stream));
    }
  }

  cuda::Context ctx_;
  std::string device_;
  std::unordered_map<void*, size_t> allocations_;
  size_t live_bytes_ = 0, peak_bytes_ = 0;
  void* cublas_workspace_ = nullptr;
  // Backend-internal device scratch, grown on demand:
  void* act_scratch_ = nullptr;  // [rows, in] bf16/f16 copy of a GEMM's activations
  size_t act_scratch_bytes_ = 0;
  void* pick_params_ = nullptr;  // [rows] PickParams
  size_t pick_params_bytes_ = 0;
  void* pick_banned_ = nullptr;  // [n_banned] int32
  size_t pick_banned_bytes_ = 0;
  void* pick_results_ = nullptr;  // [rows] PickResult
  size_t pick_results_bytes_ = 0;
  void* moe_scratch_ = nullptr;  // cuda_plan::MoePlan of the largest moe_experts call
  size_t moe_scratch_bytes_ = 0;
  // Expert weight-pointer tables (expert_table): device copy of each list, by the list.
  std::map<std::vector<const void*>, void*> expert_tables_;
  // Pinned host memory:
  char* staging_ = nullptr;  // small uploads, packed between syncs
  size_t staging_bytes_ = 0, staging_used_ = 0;
  void* host_results_ = nullptr;  // [rows] PickResult
  size_t host_results_bytes_ = 0;
  int* host_error_ = nullptr;
  char* weight_buffers_[2] = {nullptr, nullptr};  // [kWeightChunkBytes] each
  cudaEvent_t weight_events_[2] = {nullptr, nullptr};
  uint64_t weight_chunks_ = 0;
  // Step graphs:
  cuda_plan::StepGraphCache<cudaGraphExec_t> graphs_;
  cuda_plan::StepAction pending_ = cuda_plan::StepAction::Eager;  // of the step being run
  bool capturing_ = false;
  int64_t replays_ = 0;
};

}  // namespace

bool cuda_device_usable(std::string* why) {
  auto fail = [why](const std::string& reason) {
    if (why) *why = reason;
    return false;
  };
  // note: without a driver the runtime reports "driver version is insufficient", which
  // misleads; say what is missing instead.
  std::string missing;
  if (!nvidia_driver_present(&missing)) return fail(missing);
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return fail(cudaGetErrorString(err));
  }
  if (count == 0) return fail("no CUDA device found");
  cudaDeviceProp prop;
  err = cudaGetDeviceProperties(&prop, 0);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return fail(cudaGetErrorString(err));
  }
  const std::string sm = std::to_string(prop.major) + std::to_string(prop.minor);
  if (prop.major < 8)
    return fail(std::string(prop.name) + " has compute capability " + std::to_string(prop.major) +
                "." + std::to_string(prop.minor) + "; unmask's CUDA backend needs 8.0 or newer");
  cudaFuncAttributes attributes;
  err = cudaFuncGetAttributes(&attributes, cuda::probe_kernel_address());
  if (err != cudaSuccess) {
    cudaGetLastError();
    return fail(std::string(prop.name) + " (sm_" + sm + ") is not among the architectures this unmask " +
                "was built for (" UNMASK_ARCH_LIST "): rebuild with -DCMAKE_CUDA_ARCHITECTURES=" + sm +
                " (" + cudaGetErrorString(err) + ")");
  }
  return true;
}

std::unique_ptr<Backend> make_cuda_backend() { return std::make_unique<CudaBackend>(); }

}  // namespace unmask
