// Hugging Face pre-tokenizers (ByteLevel, Split, Digits, Metaspace) as a flat list of steps.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tokenizer/bpe_regex.h"

namespace unmask {

// HF's SplitDelimiterBehavior: what happens to the matched delimiters.
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct PreTokenizerStep {
  enum class Kind { kByteLevel, kSplit, kMetaspace };
  Kind kind = Kind::kSplit;
  // kByteLevel: `pattern` is the GPT-2 regex when use_regex is on, else null.
  bool add_prefix_space = false;
  // kSplit (Digits is a Split on \p{N}); kMetaspace splits on the replacement character.
  std::shared_ptr<const Regex> pattern;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  // kMetaspace
  std::string replacement;  // UTF-8 of one character, usually "▁"
  enum class Prepend { kAlways, kFirst, kNever } prepend = Prepend::kAlways;
};

// A piece of text on its way to the model. `at_start`: it begins at offset 0 of the original
// input (Metaspace's prepend_scheme "first" prepends only there).
struct PreToken {
  std::string text;
  bool at_start = false;
};

// Runs the steps over `pieces` in place; empty pieces are dropped, as HF does.
void pre_tokenize(const std::vector<PreTokenizerStep>& steps, std::vector<PreToken>& pieces);

// The GPT-2 regex of HF's ByteLevel pre-tokenizer (use_regex true).
extern const char* const kGpt2Regex;

}  // namespace unmask
