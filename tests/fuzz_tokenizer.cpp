// libFuzzer entry point for the tokenizer.json loader and the BPE pipeline it builds: any input
// may be rejected with an Error, none may crash, hang or read out of bounds. The input is written
// to a file because the loader reads one (tmpfs keeps that cheap).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

#include "common.h"
#include "tokenizer/bpe_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/dev/shm/unmask_fuzz_tokenizer_" + std::to_string(getpid()) + ".json";
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data),
                                                                static_cast<std::streamsize>(size));
  try {
    const auto tokenizer = unmask::load_tokenizer_json(path);
    // An accepted file must also encode and decode: normalizers, regexes, merges, added tokens.
    const std::string text = "In the beginning <|eot_id|> caf\xc3\xa9 \xe5\xa4\xa9 12345 \n\n  x";
    const std::vector<int32_t> ids = tokenizer->wrap_single(tokenizer->encode(text));
    (void)tokenizer->decode(ids);
    for (int32_t id : ids) (void)tokenizer->display_text(id);
  } catch (const unmask::Error&) {
    // Rejected input: the expected outcome for most fuzz cases.
  }
  return 0;
}
