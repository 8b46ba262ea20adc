// The loader that chooses a tokenizer from a model directory, and the text of an answer.
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>

#include "common.h"
#include "tokenizer/bpe_tokenizer.h"

namespace unmask {
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
    return load_sentencepiece((dir / "tokenizer.model").string(),
                              config.add_bos_token ? config.bos_token : "");
  }
  if (fs::exists(dir / "vocab.json")) return load_vocab_merges(model_dir);
  fail_input(model_dir + ": no tokenizer found (expected tokenizer.json, tokenizer.model, "
             "or vocab.json + merges.txt)");
}

namespace {
// `ids` up to the first stop id (when `stop_ids` is given), without special tokens unless kept.
std::vector<int32_t> printable_ids(const Tokenizer& tokenizer, const std::vector<int32_t>& ids,
                                   const std::vector<int32_t>* stop_ids, bool keep_special, int32_t shown) {
  auto end = stop_ids ? std::find_first_of(ids.begin(), ids.end(), stop_ids->begin(), stop_ids->end())
                      : ids.end();
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(end - ids.begin()));
  for (auto it = ids.begin(); it != end; ++it)
    if (keep_special || *it == shown || !tokenizer.is_special(*it)) out.push_back(*it);
  return out;
}
}  // namespace

std::string decode_text(const Tokenizer& tokenizer, const std::vector<int32_t>& ids,
                        const std::vector<int32_t>& stop_ids, bool keep_special, int32_t shown) {
  return tokenizer.decode(printable_ids(tokenizer, ids, &stop_ids, keep_special, shown));
}

std::string decode_continuation(const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                                const std::vector<int32_t>& answer, const std::vector<int32_t>& stop_ids,
                                bool keep_special, int32_t shown) {
  const std::vector<int32_t> head = printable_ids(tokenizer, prompt, nullptr, keep_special, shown);
  const std::vector<int32_t> tail = printable_ids(tokenizer, answer, &stop_ids, keep_special, shown);
  std::vector<int32_t> both = head;
  both.insert(both.end(), tail.begin(), tail.end());
  const std::string head_text = tokenizer.decode(head);
  const std::string both_text = tokenizer.decode(both);
  // note: a byte-fallback character split across the boundary makes the prompt's text no
  // prefix; the answer alone is then the best text there is.
  if (both_text.compare(0, head_text.size(), head_text) == 0) return both_text.substr(head_text.size());
  return tokenizer.decode(tail);
}

}  // namespace unmask
