// Hugging Face decoders (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace) as a flat chain.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tokenizer/bpe_regex.h"

namespace unmask {

struct DecoderStep {
  enum class Kind { kByteLevel, kReplace, kByteFallback, kFuse, kStrip, kMetaspace };
  Kind kind = Kind::kByteLevel;
  std::shared_ptr<const Regex> pattern;  // kReplace
  std::string content;                   // kReplace: replacement; kStrip / kMetaspace: the character
  size_t strip_start = 0, strip_stop = 0;  // kStrip: at most this many at each end
  bool metaspace_prepend = true;         // kMetaspace: prepend_scheme != "never"
};

// The token strings through every step, joined. No steps: joined with spaces, as HF without a
// decoder.
std::string decode_tokens(const std::vector<DecoderStep>& steps, std::vector<std::string> tokens);

}  // namespace unmask
