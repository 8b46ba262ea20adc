// The normalizer steps: Unicode forms and case through ICU, the rest by hand.
#include "tokenizer/bpe_normalizer.h"

namespace unmask {
namespace {

// HF's Strip normalizer: whitespace in the sense of Rust's char::is_whitespace.
std::string strip(const std::string& text, bool left, bool right) {
  size_t begin = 0, end = text.size();
  if (left) {
    while (begin < end) {
      size_t i = begin;
      if (!unicode::is_white_space(unicode::next_code_point(text, i))) break;
      begin = i;
    }
  }
  if (right) {
    while (end > begin) {
      size_t start = end - 1;
      while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) start--;
      size_t i = start;
      if (!unicode::is_white_space(unicode::next_code_point(text, i))) break;
      end = start;
    }
  }
  return text.substr(begin, end - begin);
}

}  // namespace

std::string replace_all(const Regex& pattern, const std::string& text, const std::string& content) {
  std::string out;
  for (const auto& [piece, is_match] : match_pieces(pattern, text))
    out += is_match ? content : text.substr(piece.start, piece.end - piece.start);
  return out;
}

std::string normalize(const std::vector<NormalizerStep>& steps, std::string text) {
  for (const NormalizerStep& step : steps) {
    switch (step.kind) {
      case NormalizerStep::Kind::kForm:
        text = unicode::normalize(text, step.form);
        break;
      case NormalizerStep::Kind::kLowercase:
        text = unicode::lowercase(text);
        break;
      case NormalizerStep::Kind::kPrepend:
        // note: HF prepends only to a non-empty piece.
        if (!text.empty()) text = step.text + text;
        break;
      case NormalizerStep::Kind::kReplace:
        text = replace_all(*step.pattern, text, step.text);
        break;
      case NormalizerStep::Kind::kStrip:
        text = strip(text, step.strip_left, step.strip_right);
        break;
    }
  }
  return text;
}

}  // namespace unmask
