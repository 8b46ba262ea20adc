// UTF-8 walking and repair by hand; properties, case mapping and normalization through ICU.
#include "tokenizer/unicode.h"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <algorithm>

#include "common.h"

namespace unmask::unicode {
namespace {

// Bounds of the second byte after lead byte `b` (UTF-8 excludes overlongs and surrogates here);
// {0, 0} when `b` cannot start a multi-byte sequence.
struct SecondByteRange {
  unsigned char lo, hi;
};
SecondByteRange second_byte_range(unsigned char b) {
  if (b >= 0xC2 && b <= 0xDF) return {0x80, 0xBF};
  if (b == 0xE0) return {0xA0, 0xBF};
  if (b == 0xED) return {0x80, 0x9F};
  if (b >= 0xE1 && b <= 0xEF) return {0x80, 0xBF};
  if (b == 0xF0) return {0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {0x80, 0xBF};
  if (b == 0xF4) return {0x80, 0x8F};
  return {0, 0};
}

// Length of the valid sequence at s[i], or the length of its maximal invalid prefix as a
// negative number (at least 1 byte).
long sequence_at(std::string_view s, size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) return 1;
  const SecondByteRange r = second_byte_range(b);
  if (r.lo == 0) return -1;
  const size_t need = utf8_length(b);
  size_t j = i + 1;
  for (size_t k = 1; k < need; k++, j++) {
    if (j >= s.size()) return -static_cast<long>(j - i);
    const auto c = static_cast<unsigned char>(s[j]);
    const bool ok = k == 1 ? (c >= r.lo && c <= r.hi) : (c >= 0x80 && c <= 0xBF);
    if (!ok) return -static_cast<long>(j - i);
  }
  return static_cast<long>(need);
}

std::u16string to_utf16(std::string_view s) {
  UErrorCode err = U_ZERO_ERROR;
  int32_t n = 0;
  u_strFromUTF8(nullptr, 0, &n, s.data(), static_cast<int32_t>(s.size()), &err);
  if (err != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(err)) fail_runtime("unicode: cannot convert UTF-8 text");
  std::u16string out(static_cast<size_t>(n), u'\0');
  err = U_ZERO_ERROR;
  u_strFromUTF8(reinterpret_cast<UChar*>(out.data()), n, nullptr, s.data(), static_cast<int32_t>(s.size()), &err);
  if (U_FAILURE(err)) fail_runtime("unicode: cannot convert UTF-8 text");
  return out;
}

std::string to_utf8(const std::u16string& s) {
  UErrorCode err = U_ZERO_ERROR;
  int32_t n = 0;
  const auto* src = reinterpret_cast<const UChar*>(s.data());
  u_strToUTF8(nullptr, 0, &n, src, static_cast<int32_t>(s.size()), &err);
  if (err != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(err)) fail_runtime("unicode: cannot convert UTF-16 text");
  std::string out(static_cast<size_t>(n), '\0');
  err = U_ZERO_ERROR;
  u_strToUTF8(out.data(), n, nullptr, src, static_cast<int32_t>(s.size()), &err);
  if (U_FAILURE(err)) fail_runtime("unicode: cannot convert UTF-16 text");
  return out;
}

const UNormalizer2* normalizer_for(NormalForm form) {
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* n = nullptr;
  switch (form) {
    case NormalForm::kNfc: n = unorm2_getNFCInstance(&err); break;
    case NormalForm::kNfd: n = unorm2_getNFDInstance(&err); break;
    case NormalForm::kNfkc: n = unorm2_getNFKCInstance(&err); break;
    case NormalForm::kNfkd: n = unorm2_getNFKDInstance(&err); break;
  }
  if (U_FAILURE(err) || n == nullptr)
    fail_runtime(std::string("unicode: ICU normalization data is unavailable (") + u_errorName(err) + ")");
  return n;
}

}  // namespace

bool is_ascii(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const long n = sequence_at(s, i);
    if (n < 0) return false;
    i += static_cast<size_t>(n);
  }
  return true;
}

std::string repair_utf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    const long n = sequence_at(bytes, i);
    if (n > 0) {
      out.append(bytes.substr(i, static_cast<size_t>(n)));
      i += static_cast<size_t>(n);
    } else {
      out += "\xEF\xBF\xBD";
      i += static_cast<size_t>(-n);
    }
  }
  return out;
}

size_t utf8_length(unsigned char b) {
  if (b >= 0xF0 && b <= 0xF7) return 4;
  if (b >= 0xE0) return b <= 0xEF ? 3 : 1;
  if (b >= 0xC0) return 2;
  return 1;
}

char32_t next_code_point(std::string_view s, size_t& i) {
  const auto b = static_cast<unsigned char>(s[i]);
  const size_t n = std::min(utf8_length(b), s.size() - i);
  char32_t cp = n == 1 ? b : n == 2 ? (b & 0x1F) : n == 3 ? (b & 0x0F) : (b & 0x07);
  for (size_t k = 1; k < n; k++) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += n;
  return cp;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_white_space(char32_t cp) { return u_isUWhiteSpace(static_cast<UChar32>(cp)); }

bool is_word_char(char32_t cp) {
  const auto c = static_cast<UChar32>(cp);
  if (u_hasBinaryProperty(c, UCHAR_ALPHABETIC) || u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL)) return true;
  const int32_t mask = U_GET_GC_MASK(c);
  return (mask & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0;
}

std::string normalize(std::string_view text, NormalForm form) {
  if (is_ascii(text)) return std::string(text);
  const UNormalizer2* n = normalizer_for(form);
  const std::u16string in = to_utf16(text);
  const auto* src = reinterpret_cast<const UChar*>(in.data());
  const auto len = static_cast<int32_t>(in.size());
  UErrorCode err = U_ZERO_ERROR;
  if (unorm2_isNormalized(n, src, len, &err) && U_SUCCESS(err)) return std::string(text);
  err = U_ZERO_ERROR;
  const int32_t need = unorm2_normalize(n, src, len, nullptr, 0, &err);
  if (err != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(err)) fail_runtime("unicode: normalization failed");
  std::u16string out(static_cast<size_t>(need), u'\0');
  err = U_ZERO_ERROR;
  unorm2_normalize(n, src, len, reinterpret_cast<UChar*>(out.data()), need, &err);
  if (U_FAILURE(err)) fail_runtime("unicode: normalization failed");
  return to_utf8(out);
}

std::string lowercase(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  UChar one[2];
  UChar lower[8];  // note: the longest full lowercase mapping is 3 UTF-16 units (U+0130 is 2)
  for (size_t i = 0; i < text.size();) {
    const auto b = static_cast<unsigned char>(text[i]);
    if (b < 0x80) {
      out += static_cast<char>(b >= 'A' && b <= 'Z' ? b + 32 : b);
      i++;
      continue;
    }
    const char32_t cp = next_code_point(text, i);
    int32_t n_one = 0;
    U16_APPEND_UNSAFE(one, n_one, static_cast<UChar32>(cp));
    UErrorCode err = U_ZERO_ERROR;
    // note: one character at a time, so ICU sees no context (no final-sigma rule), as Rust.
    const int32_t n = u_strToLower(lower, 8, one, n_one, "", &err);
    if (U_FAILURE(err) || n > 8) fail_runtime("unicode: lowercase mapping failed");
    for (int32_t k = 0; k < n;) {
      UChar32 c;
      U16_NEXT(lower, k, n, c);
      append_utf8(out, static_cast<char32_t>(c));
    }
  }
  return out;
}

}  // namespace unmask::unicode
