// libFuzzer entry point for the safetensors header parser: any input may be rejected, none may crash.
#include <cstddef>
#include <cstdint>

#include "common.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    std::vector<unmask::TensorInfo> infos = unmask::parse_safetensors(data, size, "fuzz.safetensors");
    // Touch every accepted range so the sanitizer sees any read outside the input.
    volatile uint8_t sink = 0;
    for (const unmask::TensorInfo& t : infos) {
      const auto* p = static_cast<const uint8_t*>(t.data);
      if (t.n_bytes > 0) sink = sink ^ p[0] ^ p[t.n_bytes - 1];
    }
    (void)sink;
  } catch (const unmask::Error&) {
    // Rejected input: the expected outcome for almost every fuzz case.
  }
  return 0;
}
