// Unicode text helpers for the tokenizers: UTF-8 walking and repair, character properties and
// normalization forms (ICU), each matching what Hugging Face `tokenizers` (Rust) does.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace unmask::unicode {

bool is_ascii(std::string_view s);
bool is_valid_utf8(std::string_view s);

// Replaces each maximal invalid subsequence with U+FFFD: the Unicode "maximal subpart" practice
// that Rust's String::from_utf8_lossy and Python's errors="replace" both follow.
std::string repair_utf8(std::string_view bytes);

// The code point at s[i] of a valid UTF-8 string; advances i past it.
char32_t next_code_point(std::string_view s, size_t& i);
// Byte length of the character that starts with lead byte `b` (1 for anything else).
size_t utf8_length(unsigned char b);
void append_utf8(std::string& out, char32_t cp);

// Rust's char::is_whitespace (the White_Space property).
bool is_white_space(char32_t cp);
// The `regex` crate's Unicode \w: Alphabetic, marks, decimal digits, connector punctuation,
// Join_Control.
bool is_word_char(char32_t cp);

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
// `text` (valid UTF-8) in the given normalization form; ASCII returns unchanged without ICU.
std::string normalize(std::string_view text, NormalForm form);
// Every character replaced by its full lowercase mapping, one character at a time (Rust's
// char::to_lowercase: no context, so a final capital sigma becomes U+03C3 like any other).
std::string lowercase(std::string_view text);

}  // namespace unmask::unicode
