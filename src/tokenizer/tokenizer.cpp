// Sentencepiece-backed Tokenizer and the loader that chooses a tokenizer from a model directory.
#include "tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <filesystem>

#include "common.h"
#include "tokenizer/bpe_tokenizer.h"

namespace unmask {
namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // bos_piece: prepended by wrap_single when non-empty (tokenizer_config.json's add_bos_token).
  SentencePieceTokenizer(const std::string& path, const std::string& bos_piece) : path_(path) {
    const auto status = processor_.Load(path);
    if (!status.ok()) fail_input(path + ": not a valid sentencepiece model (" + status.ToString() + ")");
    if (!bos_piece.empty()) {
      bos_id_ = piece_to_id(bos_piece);
      if (bos_id_ < 0) fail_input(path + ": bos_token '" + bos_piece + "' of tokenizer_config.json is not a piece");
    }
  }
  std::string kind() const override { return "sentencepiece"; }
  std::string source() const override { return path_; }
  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int> ids;
    const auto status = processor_.Encode(text, &ids);
    if (!status.ok()) fail_runtime("tokenizer: cannot encode the prompt (" + status.ToString() + ")");
    return std::vector<int32_t>(ids.begin(), ids.end());
  }
  std::vector<int32_t> wrap_single(std::vector<int32_t> ids) const override {
    if (bos_id_ >= 0) ids.insert(ids.begin(), bos_id_);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::vector<int> in;
    in.reserve(ids.size());
    for (int32_t id : ids)
      if (id >= 0 && id < processor_.GetPieceSize()) in.push_back(id);
    std::string text;
    const auto status = processor_.Decode(in, &text);
    if (!status.ok()) fail_runtime("tokenizer: cannot decode (" + status.ToString() + ")");
    return text;
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

 private:
  std::string path_;
  sentencepiece::SentencePieceProcessor processor_;
  int32_t bos_id_ = -1;
};

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir) {
  return load_tokenizer(model_dir, load_tokenizer_config(model_dir));
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir, const TokenizerConfig& config) {
  namespace fs = std::filesystem;
  const fs::path dir(model_dir);
  // note: tokenizer.json first: a directory with both was converted, and tokenizer.json is what
  // transformers' fast tokenizer (the reference encoding) reads.
  if (fs::exists(dir / "tokenizer.json")) return load_tokenizer_json((dir / "tokenizer.json").string());
  if (fs::exists(dir / "tokenizer.model")) {
    // The file itself carries no "add BOS" rule; Hugging Face's LlamaTokenizer (DiffuLLaMA) takes
    // it from tokenizer_config.json.
    return std::make_unique<SentencePieceTokenizer>((dir / "tokenizer.model").string(),
                                                    config.add_bos_token ? config.bos_token : "");
  }
  if (fs::exists(dir / "vocab.json")) return load_vocab_merges(model_dir);
  fail_input(model_dir + ": no tokenizer found (expected tokenizer.json, tokenizer.model, "
             "or vocab.json + merges.txt)");
}

std::string decode_text(const Tokenizer& tokenizer, const std::vector<int32_t>& ids,
                        const std::vector<int32_t>& stop_ids) {
  auto end = std::find_first_of(ids.begin(), ids.end(), stop_ids.begin(), stop_ids.end());
  return tokenizer.decode(std::vector<int32_t>(ids.begin(), end));
}

}  // namespace unmask
