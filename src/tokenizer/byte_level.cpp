// The byte <-> character table of GPT-2's bytes_to_unicode(), built once.
#include "tokenizer/byte_level.h"

#include <array>
#include <cstdint>

#include "tokenizer/unicode.h"

namespace unmask::byte_level {
namespace {

struct Tables {
  std::array<char32_t, 256> to_char{};
  std::array<int16_t, 324> to_byte{};  // indexed by code point; -1 outside the alphabet
  std::array<std::string, 256> to_utf8;
  Tables() {
    to_byte.fill(-1);
    // Printable Latin-1 bytes stand for themselves; the rest take 256, 257, ... in byte order.
    char32_t next = 256;
    for (int b = 0; b < 256; b++) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_char[b] = printable ? static_cast<char32_t>(b) : next++;
      to_byte[to_char[b]] = static_cast<int16_t>(b);
      unicode::append_utf8(to_utf8[b], to_char[b]);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

std::string encode(std::string_view bytes) {
  const Tables& t = tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += t.to_utf8[static_cast<unsigned char>(c)];
  return out;
}

bool decode(std::string_view piece, std::string& out) {
  const Tables& t = tables();
  const size_t mark = out.size();
  for (size_t i = 0; i < piece.size();) {
    const char32_t cp = unicode::next_code_point(piece, i);
    if (cp >= t.to_byte.size() || t.to_byte[cp] < 0) {
      out.resize(mark);
      return false;
    }
    out += static_cast<char>(t.to_byte[cp]);
  }
  return true;
}

}  // namespace unmask::byte_level
