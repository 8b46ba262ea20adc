// NaN/Inf scan by bit pattern, so no float conversion is needed for bf16 and f16 weights.
#include "io/tensor_check.h"

#include <cstdint>
#include <cstring>

namespace unmask {

namespace {
// Counts elements of `data` (n of them, each of type Word) whose exponent bits are all set.
template <typename Word>
void scan(const void* data, size_t n, Word exponent_mask, NonFiniteTensor& out) {
  const unsigned char* bytes = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; i++) {
    Word w;
    std::memcpy(&w, bytes + i * sizeof(Word), sizeof(Word));
    if ((w & exponent_mask) == exponent_mask) {
      if (out.count == 0) out.first_index = i;
      out.count++;
    }
  }
}
}  // namespace

NonFiniteTensor scan_non_finite(const TensorInfo& tensor) {
  NonFiniteTensor out;
  out.name = tensor.name;
  out.numel = tensor.n_bytes / dtype_bytes(tensor.dtype);
  switch (tensor.dtype) {
    case DType::F32: scan<uint32_t>(tensor.data, out.numel, 0x7f800000u, out); break;
    case DType::BF16: scan<uint16_t>(tensor.data, out.numel, 0x7f80u, out); break;
    case DType::F16: scan<uint16_t>(tensor.data, out.numel, 0x7c00u, out); break;
  }
  return out;
}

std::optional<NonFiniteTensor> find_non_finite(const TensorStore& store) {
  for (const auto& [name, info] : store.tensors()) {
    NonFiniteTensor found = scan_non_finite(info);
    if (found.count > 0) return found;
  }
  return std::nullopt;
}

}  // namespace unmask
