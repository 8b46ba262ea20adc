// Added-token matching: candidates bucketed by first byte, tried longest first at each position.
#include "tokenizer/bpe_added_tokens.h"

#include <algorithm>

#include "tokenizer/unicode.h"

namespace unmask {
namespace {

// The character that ends at `end` (exclusive) in valid UTF-8 `s`.
char32_t char_before(std::string_view s, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) start--;
  return unicode::next_code_point(s, start);
}

// Where the run of whitespace that ends at `end` begins.
size_t whitespace_start(std::string_view s, size_t end) {
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) start--;
    size_t i = start;
    if (!unicode::is_white_space(unicode::next_code_point(s, i))) break;
    end = start;
  }
  return end;
}

// Where the run of whitespace that starts at `start` ends.
size_t whitespace_end(std::string_view s, size_t start) {
  while (start < s.size()) {
    size_t i = start;
    if (!unicode::is_white_space(unicode::next_code_point(s, i))) break;
    start = i;
  }
  return start;
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  std::erase_if(tokens_, [](const AddedToken& t) { return t.content.empty(); });
  for (uint32_t i = 0; i < tokens_.size(); i++)
    by_first_byte_[static_cast<unsigned char>(tokens_[i].content[0])].push_back(i);
  for (auto& bucket : by_first_byte_)
    std::stable_sort(bucket.begin(), bucket.end(), [&](uint32_t a, uint32_t b) {
      return tokens_[a].content.size() > tokens_[b].content.size();
    });
}

std::vector<TextSpan> AddedTokenMatcher::split(std::string_view text) const {
  std::vector<TextSpan> spans;
  size_t done = 0;  // everything before this offset is in `spans`
  size_t pos = 0;
  while (pos < text.size()) {
    const AddedToken* found = nullptr;
    for (uint32_t index : by_first_byte_[static_cast<unsigned char>(text[pos])]) {
      const AddedToken& t = tokens_[index];
      if (text.compare(pos, t.content.size(), t.content) == 0) {
        found = &t;
        break;
      }
    }
    if (found == nullptr) {
      pos++;
      continue;
    }
    size_t start = pos, stop = pos + found->content.size();
    pos = stop;  // note: like aho-corasick, the next search starts after this match, used or not
    if (found->single_word) {
      const bool word_before = start > 0 && unicode::is_word_char(char_before(text, start));
      size_t i = stop;
      const bool word_after = stop < text.size() && unicode::is_word_char(unicode::next_code_point(text, i));
      if (word_before || word_after) continue;
    }
    if (found->lstrip) start = std::max(whitespace_start(text, start), done);
    if (found->rstrip) stop = whitespace_end(text, stop);
    if (done < start) spans.push_back({done, start, -1});
    spans.push_back({start, stop, found->id});
    done = stop;
    pos = std::max(pos, stop);
  }
  if (done < text.size()) spans.push_back({done, text.size(), -1});
  return spans;
}

}  // namespace unmask
