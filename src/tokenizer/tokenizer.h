// The Tokenizer interface and its loader, which picks the implementation from the files present.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/tokenizer_config.h"

namespace unmask {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string kind() const = 0;  // e.g. "sentencepiece", "bpe (tokenizer.json)"
  // The file(s) it was loaded from, for `unmask info`.
  virtual std::string source() const { return ""; }
  // Text to ids: added/special tokens written in the text are matched (a mask token's text gives
  // the mask id); nothing is prepended or appended (see wrap_single). Invalid UTF-8 is first
  // repaired with one U+FFFD per maximal invalid subsequence (unicode::repair_utf8).
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  // The post-processor's single-sequence template applied to encode()'s ids (e.g. BOS first).
  virtual std::vector<int32_t> wrap_single(std::vector<int32_t> ids) const { return ids; }
  // Ids to text, special tokens included as their text; unknown ids are skipped; invalid UTF-8
  // becomes U+FFFD.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  // Special tokens, which printed text leaves out unless asked (HF's skip_special_tokens):
  // sentencepiece's control and unknown pieces, tokenizer.json's added tokens marked special.
  virtual bool is_special(int32_t /*id*/) const { return false; }
  virtual std::string piece(int32_t id) const = 0;       // the raw piece, for display
  // One token as the live view shows it: the raw piece by default (the view maps sentencepiece's
  // U+2581 to a space); byte-level BPE decodes it, since its pieces spell bytes as other letters.
  virtual std::string display_text(int32_t id) const { return piece(id); }
  virtual int32_t piece_to_id(const std::string& piece) const = 0;  // -1 when unknown; added tokens too
  virtual int32_t vocab_size() const = 0;  // highest id + 1, added tokens included
  // Bytes of the longest piece (as stored, so at least the text it stands for): a text of more
  // than positions * this many bytes cannot fit `positions` tokens.
  virtual size_t longest_piece_bytes() const = 0;
};

// Picks by the files in `model_dir`: tokenizer.json (Hugging Face, BPE), else tokenizer.model
// (sentencepiece), else vocab.json + merges.txt (+ tokenizer_config.json; the Qwen2 byte-level
// BPE). fail_input names the file on errors.
// `config` is the directory's tokenizer_config.json (its add_bos_token and bos_token apply to
// sentencepiece); the one-argument form reads it itself.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir, const TokenizerConfig& config);
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir);
// A sentencepiece tokenizer.model; fail_input names the file, and says so when the file is a
// tiktoken BPE file (Llama-3) rather than sentencepiece.
std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& path, const std::string& bos_piece);

// The text of ids up to (not including) the first stop id, special tokens left out unless
// `keep_special`.
// `shown` (e.g. the mask id, so a mask left unfilled stays visible) is kept even when special.
std::string decode_text(const Tokenizer& tokenizer, const std::vector<int32_t>& ids,
                        const std::vector<int32_t>& stop_ids, bool keep_special = false,
                        int32_t shown = -1);

// The text that `answer` adds to `prompt`: decode(prompt + answer) less decode(prompt), so a word
// boundary the tokenizer spells inside a piece (sentencepiece's "▁of") keeps its space and
// decode_text(prompt) + the result == decode_text(prompt + answer). The answer ends at its first
// stop id; special tokens are left out of both unless `keep_special`.
std::string decode_continuation(const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                                const std::vector<int32_t>& answer, const std::vector<int32_t>& stop_ids,
                                bool keep_special = false, int32_t shown = -1);

}  // namespace unmask
