// The sentencepiece Tokenizer (tokenizer.model): special pieces written in the text are matched,
// invalid UTF-8 is repaired as on the BPE path, and a file that is not sentencepiece is named.
#include <sentencepiece_processor.h>

#include <algorithm>
#include <cctype>

#include "common.h"
#include "io/safetensors.h"
#include "tokenizer/sentencepiece_proto.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace unmask {
namespace {

// Meta's Llama-3 ships a tiktoken BPE file named tokenizer.model: lines of "<base64> <rank>".
bool looks_like_tiktoken(const std::string& bytes) {
  const size_t eol = bytes.find('\n');
  const std::string line = bytes.substr(0, eol == std::string::npos ? std::min<size_t>(bytes.size(), 256) : eol);
  const size_t space = line.find(' ');
  if (space == std::string::npos || space == 0 || space + 1 >= line.size()) return false;
  for (size_t i = 0; i < space; i++) {
    const char c = line[i];
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '/' && c != '=') return false;
  }
  for (size_t i = space + 1; i < line.size(); i++)
    if (!std::isdigit(static_cast<unsigned char>(line[i])) && line[i] != '\r') return false;
  return true;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // bos_piece: prepended by wrap_single when non-empty (tokenizer_config.json's add_bos_token).
  SentencePieceTokenizer(const std::string& path, const std::string& bos_piece) : path_(path) {
    const std::string bytes = read_whole_file(path);
    const auto status = processor_.LoadFromSerializedProto(bytes);
    if (!status.ok()) {
      if (looks_like_tiktoken(bytes))
        fail_input(path + ": not a sentencepiece model but a tiktoken BPE file (the format of Meta's "
               "Llama-3 tokenizer.model); unmask reads such models through their Hugging Face "
               "tokenizer.json: put tokenizer.json in the model directory");
      fail_input(path + ": not a valid sentencepiece model (" + status.ToString() +
                 "); if the model ships a tokenizer.json (Hugging Face format), put that in the "
                 "model directory instead");
    }
    const SpecialMatchingProto special = special_matching_proto(bytes, path);
    const auto matching = encoder_.LoadFromSerializedProto(special.serialized);
    if (!matching.ok()) fail_input(path + ": cannot prepare special-piece matching (" + matching.ToString() + ")");
    unk_alias_ = special.unk_alias;
    for (int i = 0; i < processor_.GetPieceSize(); i++)
      longest_piece_ = std::max(longest_piece_, processor_.IdToPiece(i).size());
    if (!bos_piece.empty()) {
      bos_id_ = piece_to_id(bos_piece);
      if (bos_id_ < 0) fail_input(path + ": bos_token '" + bos_piece + "' of tokenizer_config.json is not a piece");
    }
  }
  std::string kind() const override { return "sentencepiece"; }
  std::string source() const override { return path_; }
  std::vector<int32_t> encode(const std::string& text) const override {
    const std::string clean = unicode::is_valid_utf8(text) ? text : unicode::repair_utf8(text);
    std::vector<int> ids;
    const auto status = encoder_.Encode(clean, &ids);
    if (!status.ok()) fail_runtime("tokenizer: cannot encode the prompt (" + status.ToString() + ")");
    std::vector<int32_t> out(ids.begin(), ids.end());
    for (int32_t& id : out)
      if (id == unk_alias_) id = processor_.unk_id();
    return out;
  }
  std::vector<int32_t> wrap_single(std::vector<int32_t> ids) const override {
    if (bos_id_ >= 0) ids.insert(ids.begin(), bos_id_);
    return ids;
  }
  // Special pieces decode to their text (the matching model treats them as user-defined).
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::vector<int> in;
    in.reserve(ids.size());
    for (int32_t id : ids) {
      if (id < 0 || id >= processor_.GetPieceSize()) continue;
      in.push_back(id == processor_.unk_id() && unk_alias_ >= 0 ? unk_alias_ : id);
    }
    std::string text;
    const auto status = encoder_.Decode(in, &text);
    if (!status.ok()) fail_runtime("tokenizer: cannot decode (" + status.ToString() + ")");
    return text;
  }
  bool is_special(int32_t id) const override {
    return id >= 0 && id < processor_.GetPieceSize() && (processor_.IsControl(id) || processor_.IsUnknown(id));
  }
  std::string piece(int32_t id) const override {
    if (id < 0 || id >= processor_.GetPieceSize()) return "<" + std::to_string(id) + ">";
    return processor_.IdToPiece(id);
  }
  int32_t piece_to_id(const std::string& piece) const override {
    const int id = processor_.PieceToId(piece);
    // sentencepiece maps unknown pieces to unk; tell them apart from a real unk lookup.
    if (id == processor_.unk_id() && piece != processor_.IdToPiece(id)) return -1;
    return id;
  }
  int32_t vocab_size() const override { return processor_.GetPieceSize(); }
  size_t longest_piece_bytes() const override { return longest_piece_; }

 private:
  std::string path_;
  sentencepiece::SentencePieceProcessor processor_;  // the file as it is: ids, pieces, types
  sentencepiece::SentencePieceProcessor encoder_;    // control pieces as user-defined ones
  int32_t unk_alias_ = -1;
  int32_t bos_id_ = -1;
  size_t longest_piece_ = 1;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& path, const std::string& bos_piece) {
  return std::make_unique<SentencePieceTokenizer>(path, bos_piece);
}

}  // namespace unmask
