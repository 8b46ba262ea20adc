// GPT-2's byte-level alphabet: every byte as one printable character, so BPE pieces are text.
#pragma once

#include <string>
#include <string_view>

namespace unmask::byte_level {

// Each byte of `bytes` as its alphabet character (UTF-8); e.g. ' ' -> "Ġ" (U+0120).
std::string encode(std::string_view bytes);

// The bytes behind a piece, appended to `out`. False (and nothing appended) when some character
// is not in the alphabet; the caller then uses the piece's own bytes, as HF's decoder does.
bool decode(std::string_view piece, std::string& out);

}  // namespace unmask::byte_level
