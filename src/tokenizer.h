// The Tokenizer interface and its loader, which picks the implementation from the files present.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace unmask {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string kind() const = 0;  // e.g. "sentencepiece"
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual std::string piece(int32_t id) const = 0;       // the raw piece, for display
  virtual int32_t piece_to_id(const std::string& piece) const = 0;  // -1 when unknown
  virtual int32_t vocab_size() const = 0;
};

// Loads `model_dir/tokenizer.model` (sentencepiece). fail_input names the file on errors.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir);

// Decodes ids up to (not including) the first stop id.
std::string decode_text(const Tokenizer& tokenizer, const std::vector<int32_t>& ids,
                        const std::vector<int32_t>& stop_ids);

}  // namespace unmask
