// Protobuf wire-format walk over ModelProto.pieces (field 1): SentencePiece {1: piece, 2: score,
// 3: type}. Only the type varints are rewritten in place, and one piece is appended.
#include "tokenizer/sentencepiece_proto.h"

#include "common.h"

namespace unmask {
namespace {

constexpr uint32_t kWireVarint = 0, kWire64 = 1, kWireLength = 2, kWire32 = 5;
constexpr uint64_t kTypeUnknown = 2, kTypeControl = 3, kTypeUserDefined = 4;

// A bounds-checked cursor over [begin, end) of the serialized bytes.
class Wire {
 public:
  Wire(std::string_view bytes, size_t begin, size_t end, const std::string& path)
      : b_(bytes), at_(begin), end_(end), path_(path) {}
  bool done() const { return at_ >= end_; }
  size_t at() const { return at_; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (at_ >= end_) broken();
      const auto byte = static_cast<unsigned char>(b_[at_++]);
      v |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return v;
    }
    broken();
  }
  // Skips the value of a field of `wire` type; for length-delimited ones returns [start, end).
  std::pair<size_t, size_t> skip(uint32_t wire) {
    size_t n = 0;
    switch (wire) {
      case kWireVarint: varint(); return {at_, at_};
      case kWire64: n = 8; break;
      case kWire32: n = 4; break;
      case kWireLength: n = static_cast<size_t>(varint()); break;
      default: broken();
    }
    if (n > end_ - at_) broken();
    const size_t start = at_;
    at_ += n;
    return {start, at_};
  }
  [[noreturn]] void broken() const {
    fail_input(path_ + ": the sentencepiece model's pieces cannot be read (truncated or not a ModelProto)");
  }

 private:
  std::string_view b_;
  size_t at_, end_;
  const std::string& path_;
};

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

// The UNKNOWN piece's text is renamed, since sentencepiece resolves a matched piece's text through
// the reserved pieces first and would give the unknown id (then byte fallback) for "<unk>".
constexpr std::string_view kUnknownRenamed = "<unk (the unknown piece)>";

// A SentencePiece message {1: text, 2: score 0, 3: type}.
std::string piece_message(std::string_view text, uint64_t type) {
  std::string piece;
  piece += static_cast<char>(1u << 3 | kWireLength);
  put_varint(piece, text.size());
  piece += text;
  piece += static_cast<char>(2u << 3 | kWire32);
  piece.append(4, '\0');  // score 0.0f
  piece += static_cast<char>(3u << 3 | kWireVarint);
  piece += static_cast<char>(type);
  return piece;
}

void put_field(std::string& out, std::string_view message) {
  out += static_cast<char>(1u << 3 | kWireLength);
  put_varint(out, message.size());
  out += message;
}

}  // namespace

SpecialMatchingProto special_matching_proto(std::string_view model, const std::string& path) {
  SpecialMatchingProto out;
  std::string unk_text;
  int32_t n_pieces = 0;
  Wire top(model, 0, model.size(), path);
  while (!top.done()) {
    const size_t field_at = top.at();
    const uint64_t tag = top.varint();
    const auto [start, end] = top.skip(static_cast<uint32_t>(tag & 7));
    std::string field(model.substr(field_at, end - field_at));
    if (tag >> 3 == 1 && (tag & 7) == kWireLength) {
      n_pieces++;
      std::string_view text;
      uint64_t type = 1;  // NORMAL, the default when the field is absent
      Wire piece(model, start, end, path);
      while (!piece.done()) {
        const uint64_t ptag = piece.varint();
        const size_t value_at = piece.at();
        if (ptag == (1u << 3 | kWireLength)) {
          const auto [s, e] = piece.skip(kWireLength);
          text = model.substr(s, e - s);
        } else if (ptag == (3u << 3 | kWireVarint)) {
          type = piece.varint();
          // note: enum values below 128 are one byte, so the rewrite keeps every offset.
          if (type == kTypeControl && piece.at() == value_at + 1)
            field[(start - field_at) + (value_at - start)] = static_cast<char>(kTypeUserDefined);
        } else {
          piece.skip(static_cast<uint32_t>(ptag & 7));
        }
      }
      if (type == kTypeUnknown) {
        unk_text = std::string(text);
        field.clear();
        put_field(field, piece_message(kUnknownRenamed, kTypeUnknown));
      }
    }
    out.serialized += field;
  }
  if (!unk_text.empty()) {
    put_field(out.serialized, piece_message(unk_text, kTypeUserDefined));
    out.unk_alias = n_pieces;
  }
  return out;
}

}  // namespace unmask
