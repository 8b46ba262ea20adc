// PCRE2 wrapper: compile once (JIT when the platform has it), iterate matches like the onig crate.
#include "tokenizer/bpe_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common.h"
#include "tokenizer/unicode.h"

namespace unmask {

Regex::Regex(const std::string& pattern, bool literal, const std::string& where) : pattern_(pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  // note: PCRE2 refuses UCP together with LITERAL, and a literal needs no character classes.
  const uint32_t options = literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &error,
                        &offset, nullptr);
  if (code_ == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    fail_input(where + ": regex '" + pattern + "' does not compile at offset " + std::to_string(offset) +
               " (" + reinterpret_cast<const char*>(message) + ")");
  }
  // note: JIT is an optimization only; where it is unavailable the interpreter runs the same match.
  pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
}

Regex::~Regex() { pcre2_code_free(code_); }

std::vector<Match> Regex::find_all(std::string_view text) const {
  std::vector<Match> matches;
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(code_, nullptr);
  if (data == nullptr) fail_runtime("regex: out of memory");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t from = 0;
  bool have_last = false;
  size_t last_end = 0;
  while (from <= text.size()) {
    // note: the input is checked UTF-8 already; PCRE2_NO_UTF_CHECK saves a pass per call.
    int rc = pcre2_match(code_, subject, text.size(), from, PCRE2_NO_UTF_CHECK, data, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
      rc = pcre2_match(code_, subject, text.size(), from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, data, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(data);
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof message);
      fail_runtime("tokenizer: regex '" + pattern_ + "' failed on the input (" +
                   reinterpret_cast<const char*>(message) + ")");
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data);
    const Match m{ov[0], ov[1]};
    if (m.start == m.end && have_last && m.end == last_end) {
      if (from >= text.size()) break;
      from += unicode::utf8_length(static_cast<unsigned char>(text[from]));
      continue;
    }
    matches.push_back(m);
    have_last = true;
    last_end = m.end;
    from = m.end;
    // An empty match at the very end leaves nothing more to find.
    if (m.start == m.end && m.end == text.size()) break;
  }
  pcre2_match_data_free(data);
  return matches;
}

std::vector<std::pair<Match, bool>> match_pieces(const Regex& regex, std::string_view text) {
  std::vector<std::pair<Match, bool>> pieces;
  if (text.empty()) {
    pieces.push_back({Match{0, 0}, false});
    return pieces;
  }
  size_t prev = 0;
  for (const Match& m : regex.find_all(text)) {
    if (prev != m.start) pieces.push_back({Match{prev, m.start}, false});
    pieces.push_back({m, true});
    prev = m.end;
  }
  if (prev != text.size()) pieces.push_back({Match{prev, text.size()}, false});
  return pieces;
}

}  // namespace unmask
