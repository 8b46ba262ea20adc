// Counter-based noise: a pure function of (seed, stream, step, position, index), shared by the
// CPU backend, the CUDA kernels and scripts/reference.py, so every backend and every batching of
// a request draws the same numbers.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define UNMASK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define UNMASK_HOST_DEVICE inline
#endif

namespace unmask {

// Streams keep independent uses of the generator apart.
enum NoiseStream : uint32_t {
  kStreamGumbel = 0,       // token choice at temperature > 0, index = vocabulary id
  kStreamRemaskRandom = 1, // confidence under --remasking random, index = 0
  kStreamSynthetic = 2,    // synthetic weights: position = element index >> 32, index = low bits
  kStreamDreamTransfer = 3,  // Dream's loop: origin's transfer draw, --alg-temp's Gumbel; index = 0
};

UNMASK_HOST_DEVICE uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// step: the request's sampling-step counter (0, 1, ... across all blocks);
// position: absolute canvas position (prompt included).
UNMASK_HOST_DEVICE uint64_t noise_bits(uint64_t seed, uint32_t stream, uint32_t step,
                                       uint32_t position, uint32_t index) {
  uint64_t h = splitmix64(seed);
  h = splitmix64(h ^ ((static_cast<uint64_t>(stream) << 32) | step));
  return splitmix64(h ^ ((static_cast<uint64_t>(position) << 32) | index));
}

// Uniform in the open interval (0, 1): 24 random bits, centred in their cell, so log() is finite.
UNMASK_HOST_DEVICE double noise_uniform(uint64_t bits) {
  return (static_cast<double>(bits >> 40) + 0.5) * (1.0 / 16777216.0);
}

// Gumbel(0, 1) sample: -log(-log(u)).
UNMASK_HOST_DEVICE double noise_gumbel(uint64_t bits) {
  return -std::log(-std::log(noise_uniform(bits)));
}

// Element `i` of a synthetic weight tensor: uniform in (-scale, scale).
UNMASK_HOST_DEVICE float synthetic_weight(uint64_t seed, uint64_t i, float scale) {
  const uint64_t bits = noise_bits(seed, kStreamSynthetic, 0, static_cast<uint32_t>(i >> 32),
                                   static_cast<uint32_t>(i));
  return static_cast<float>((2.0 * noise_uniform(bits) - 1.0) * scale);
}

}  // namespace unmask
