// Byte-level (and sentencepiece-style) BPE behind the Tokenizer interface, encoding exactly as
// Hugging Face `tokenizers`: added tokens -> normalizer -> pre-tokenizer -> BPE; decoders back.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/bpe_added_tokens.h"
#include "tokenizer/bpe_decoder.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/bpe_normalizer.h"
#include "tokenizer/bpe_pretokenizer.h"
#include "tokenizer/tokenizer.h"

namespace unmask {

// Everything a BpeTokenizer runs, as the loaders build it from the files.
struct BpePipeline {
  std::string kind;    // Tokenizer::kind()
  std::string source;  // Tokenizer::source()
  std::vector<NormalizerStep> normalizer;
  std::vector<PreTokenizerStep> pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  std::vector<AddedToken> added_tokens;
  // Post-processor "single" templates applied in order; -1 stands for the sequence itself.
  std::vector<std::vector<int32_t>> templates;
  std::vector<DecoderStep> decoder;
};

class BpeTokenizer final : public Tokenizer {
 public:
  explicit BpeTokenizer(BpePipeline pipeline);
  // id_to_piece_ points into the pipeline, so the object stays where it was built.
  BpeTokenizer(const BpeTokenizer&) = delete;
  BpeTokenizer& operator=(const BpeTokenizer&) = delete;
  std::string kind() const override { return p_.kind; }
  std::string source() const override { return p_.source; }
  std::vector<int32_t> encode(const std::string& text) const override;
  std::vector<int32_t> wrap_single(std::vector<int32_t> ids) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  std::string piece(int32_t id) const override;
  bool is_special(int32_t id) const override;
  std::string display_text(int32_t id) const override { return decode({id}); }
  int32_t piece_to_id(const std::string& piece) const override;
  int32_t vocab_size() const override { return vocab_size_; }
  size_t longest_piece_bytes() const override { return longest_piece_; }

 private:
  // Normalized-text stage: normalized added tokens, then pre-tokenizer and model.
  void encode_plain(const std::string& text, bool at_start, std::vector<int32_t>& out) const;
  std::string_view token_string(int32_t id) const;  // "" when no piece has that id

  BpePipeline p_;
  AddedTokenMatcher raw_matcher_;         // added tokens with normalized = false
  AddedTokenMatcher normalized_matcher_;  // added tokens with normalized = true
  std::vector<std::string_view> id_to_piece_;  // into the vocab and added_tokens; added win
  PieceMap added_ids_;
  std::vector<bool> special_;  // by id: an added token marked special
  int32_t vocab_size_ = 0;
  size_t longest_piece_ = 1;
};

// DIR/tokenizer.json (Hugging Face). Unsupported components and bad keys are one-line
// fail_input errors naming the file and the component or key.
std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& path);

// DIR/vocab.json + DIR/merges.txt (+ DIR/tokenizer_config.json for the added tokens), read as
// transformers reads a Qwen2 tokenizer: NFC, the Qwen2 split regex, byte-level BPE.
std::unique_ptr<Tokenizer> load_vocab_merges(const std::string& model_dir);

}  // namespace unmask
