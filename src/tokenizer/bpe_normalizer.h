// Hugging Face normalizers as a flat list of steps (a Sequence is flattened into its members).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tokenizer/bpe_regex.h"
#include "tokenizer/unicode.h"

namespace unmask {

struct NormalizerStep {
  enum class Kind { kForm, kLowercase, kPrepend, kReplace, kStrip };
  Kind kind = Kind::kForm;
  unicode::NormalForm form = unicode::NormalForm::kNfc;  // kForm
  std::string text;                                       // kPrepend: prefix; kReplace: content
  std::shared_ptr<const Regex> pattern;                   // kReplace
  bool strip_left = false, strip_right = false;           // kStrip
};

// `text` (valid UTF-8) through every step in order.
std::string normalize(const std::vector<NormalizerStep>& steps, std::string text);

// Each match of `pattern` in `text` replaced by `content` (HF's Replace, normalizer and decoder).
std::string replace_all(const Regex& pattern, const std::string& text, const std::string& content);

}  // namespace unmask
