// Added tokens (special and not): found in the text before the model sees it, longest first.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace unmask {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool single_word = false;  // only where no word character touches it
  bool lstrip = false;       // swallows the whitespace on its left
  bool rstrip = false;       // swallows the whitespace on its right
  bool normalized = false;   // matched in the normalized text instead of the raw text
};

struct TextSpan {
  size_t start = 0, end = 0;
  int32_t id = -1;  // the added token's id, or -1 for plain text
};

// Leftmost-longest matching over a fixed set of tokens, with HF's single_word / lstrip / rstrip
// rules (AddedVocabulary::find_matches).
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // `tokens[i].content` is the string to look for (already normalized for normalized tokens).
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens);
  bool empty() const { return tokens_.empty(); }
  // Spans covering `text` in order; plain-text spans are never empty.
  std::vector<TextSpan> split(std::string_view text) const;

 private:
  std::vector<AddedToken> tokens_;
  std::array<std::vector<uint32_t>, 256> by_first_byte_;  // indices into tokens_, longest first
};

}  // namespace unmask
