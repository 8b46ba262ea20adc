// A compiled PCRE2 pattern (UTF, Unicode properties, JIT when available) and the match iteration
// that Hugging Face `tokenizers` uses for its Split / Replace patterns.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct pcre2_real_code_8;

namespace unmask {

struct Match {
  size_t start = 0, end = 0;  // byte offsets, [start, end)
};

class Regex {
 public:
  // `literal`: the pattern is a plain string (a tokenizer.json {"String": ...} pattern).
  // A pattern PCRE2 rejects is fail_input(where + ": ...").
  Regex(const std::string& pattern, bool literal, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Non-overlapping matches left to right in valid UTF-8 `text`. An empty match right where the
  // previous match ended is skipped, as the onig crate's find_iter does.
  std::vector<Match> find_all(std::string_view text) const;

 private:
  pcre2_real_code_8* code_ = nullptr;
  std::string pattern_;
};

// The pieces of `text` between and at the matches: ([start, end), is_match), covering all of it;
// HF's Pattern::find_matches (an empty text is one empty non-match).
std::vector<std::pair<Match, bool>> match_pieces(const Regex& regex, std::string_view text);

}  // namespace unmask
