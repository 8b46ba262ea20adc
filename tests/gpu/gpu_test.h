// Helpers of the GPU tests: device check, CPU/CUDA backend pairs, twin tensors, error measures.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common.h"
#include "cuda/cuda_backend.h"
#include "io/tensor.h"
#include "model/backend.h"

namespace unmask::gpu_test {

// Every GPU case starts with this: without a device the case passes with a message.
#define UNMASK_REQUIRE_CUDA()                                          \
  do {                                                                 \
    std::string unmask_why_;                                           \
    if (!::unmask::cuda_device_usable(&unmask_why_)) {                 \
      MESSAGE("skipped: no CUDA device (" << unmask_why_ << ")");      \
      return;                                                          \
    }                                                                  \
  } while (0)

// The oracle and the backend under test.
struct Backends {
  std::unique_ptr<Backend> cpu = make_cpu_backend(0);
  std::unique_ptr<Backend> gpu = make_cuda_backend();
};

// The same data on both backends.
struct Twin {
  Tensor cpu, gpu;
};

// Raw bytes of `values` stored as `dtype` (rounded to nearest even).
inline std::vector<uint16_t> to_16bit(const std::vector<float>& values, DType dtype) {
  std::vector<uint16_t> out(values.size());
  for (size_t i = 0; i < values.size(); i++)
    out[i] = dtype == DType::BF16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
  return out;
}

inline Twin make_twin(Backends& b, int64_t rows, int64_t cols, const std::vector<float>& values,
                      DType dtype = DType::F32) {
  Twin t;
  t.cpu.rows = t.gpu.rows = rows;
  t.cpu.cols = t.gpu.cols = cols;
  t.cpu.dtype = t.gpu.dtype = dtype;
  const size_t bytes = t.cpu.n_bytes();
  std::vector<uint16_t> half;
  const void* src = values.data();
  if (dtype != DType::F32) {
    half = to_16bit(values, dtype);
    src = half.data();
  }
  t.cpu.data = b.cpu->alloc(bytes);
  t.gpu.data = b.gpu->alloc(bytes);
  b.cpu->upload(t.cpu.data, src, bytes);
  b.gpu->upload(t.gpu.data, src, bytes);
  return t;
}

inline Twin make_zeros(Backends& b, int64_t rows, int64_t cols) {
  return make_twin(b, rows, cols, std::vector<float>(static_cast<size_t>(rows * cols), 0.f));
}

// Int32 array on both backends.
struct IntTwin {
  int32_t* cpu = nullptr;
  int32_t* gpu = nullptr;
};

inline IntTwin make_ints(Backends& b, const std::vector<int32_t>& values) {
  IntTwin t;
  const size_t bytes = std::max<size_t>(values.size(), 1) * sizeof(int32_t);
  t.cpu = static_cast<int32_t*>(b.cpu->alloc(bytes));
  t.gpu = static_cast<int32_t*>(b.gpu->alloc(bytes));
  b.cpu->upload(t.cpu, values.data(), values.size() * sizeof(int32_t));
  b.gpu->upload(t.gpu, values.data(), values.size() * sizeof(int32_t));
  return t;
}

inline std::vector<float> fetch(Backend& backend, const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  backend.download(out.data(), t.data, out.size() * sizeof(float));
  return out;
}

// max |got - want| / max |want|: relative to the tensor's scale, robust to entries near zero.
inline double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < want.size(); i++) {
    diff = std::max(diff, std::fabs(static_cast<double>(got[i]) - want[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

// Both backends' results of one op on twin outputs, compared.
inline double twin_error(Backends& b, const Twin& t) {
  return rel_error(fetch(*b.gpu, t.gpu), fetch(*b.cpu, t.cpu));
}

inline std::vector<float> random_values(std::mt19937& gen, size_t n, float stddev = 1.f) {
  std::normal_distribution<float> normal(0.f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = normal(gen);
  return v;
}

}  // namespace unmask::gpu_test
