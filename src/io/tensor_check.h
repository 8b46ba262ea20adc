// Scans stored tensors for NaN and infinity (`unmask info --check-weights`).
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include "io/safetensors.h"

namespace unmask {

struct NonFiniteTensor {
  std::string name;
  size_t count = 0;        // NaN or ±inf elements
  size_t first_index = 0;  // flat index of the first one
  size_t numel = 0;
};

// NaN/±inf elements of one tensor (F32, BF16 or F16, read by bit pattern: an all-ones exponent).
NonFiniteTensor scan_non_finite(const TensorInfo& tensor);

// The first tensor in name order that holds a NaN or an infinity; nullopt when all are finite.
// Reads every byte of every tensor once.
std::optional<NonFiniteTensor> find_non_finite(const TensorStore& store);

}  // namespace unmask
