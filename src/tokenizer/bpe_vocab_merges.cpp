// vocab.json + merges.txt (+ tokenizer_config.json) -> BpePipeline: the Qwen2 tokenizer as
// transformers builds it from these files (NFC, Qwen2 split regex, byte-level BPE, no template).
#include <filesystem>

#include "tokenizer/bpe_json.h"
#include "tokenizer/bpe_tokenizer.h"

namespace unmask {
namespace {

using bpe_json::json;
using bpe_json::Node;

const char* const kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

PieceMap read_vocab(const std::string& path) {
  std::vector<std::pair<std::string, int32_t>> entries = bpe_json::parse_vocab_json(path);
  PieceMap vocab;
  vocab.reserve(entries.size());
  for (auto& [piece, id] : entries) vocab.emplace(std::move(piece), id);
  return vocab;
}

void read_merges(const std::string& path, BpeModel& model) {
  const std::string text = bpe_json::read_file(path);
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    line_no++;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    // note: transformers skips the "#version" header and blank lines.
    if (line.empty() || line.starts_with("#version")) continue;
    const size_t space = line.find(' ');
    const std::string where = path + ": line " + std::to_string(line_no);
    if (space == std::string_view::npos || line.find(' ', space + 1) != std::string_view::npos)
      fail_input(where + ": a merge must be two pieces separated by one space");
    const std::string error = model.add_merge(line.substr(0, space), line.substr(space + 1));
    if (!error.empty()) fail_input(where + ": " + error);
  }
}

// tokenizer_config.json's added_tokens_decoder: {"151643": {"content": ..., "special": ...}, ...}.
std::vector<AddedToken> read_added_tokens(const std::string& path) {
  const json doc = bpe_json::parse_file(path);
  const Node root(doc, path, "");
  root.object();
  std::vector<AddedToken> tokens;
  if (!root.has("added_tokens_decoder")) return tokens;
  const Node decoder = root["added_tokens_decoder"];
  for (auto it = decoder.object().begin(); it != decoder.object().end(); ++it) {
    const Node n(it.value(), path, decoder.at() + "." + it.key());
    const std::string& key = it.key();
    if (key.empty() || key.size() > 10 || key.find_first_not_of("0123456789") != std::string::npos ||
        std::stoll(key) > std::numeric_limits<int32_t>::max())
      n.fail_here("is not a token id");
    tokens.push_back(bpe_json::read_added_token(n, static_cast<int32_t>(std::stoll(key))));
  }
  return tokens;
}

}  // namespace

std::unique_ptr<Tokenizer> load_vocab_merges(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const std::string vocab_path = (fs::path(model_dir) / "vocab.json").string();
  const std::string merges_path = (fs::path(model_dir) / "merges.txt").string();
  const std::string config_path = (fs::path(model_dir) / "tokenizer_config.json").string();
  if (!fs::exists(merges_path))
    fail_input(merges_path + ": missing; a vocab.json tokenizer needs its merges.txt beside it");

  BpePipeline p;
  p.kind = "bpe (vocab.json + merges.txt)";
  p.source = vocab_path + " + " + merges_path;
  p.model = std::make_unique<BpeModel>(read_vocab(vocab_path), BpeModel::Options{});
  read_merges(merges_path, *p.model);
  if (fs::exists(config_path)) {
    p.added_tokens = read_added_tokens(config_path);
    p.source += " + " + config_path;
  }
  NormalizerStep nfc;
  nfc.kind = NormalizerStep::Kind::kForm;
  nfc.form = unicode::NormalForm::kNfc;
  p.normalizer.push_back(nfc);
  PreTokenizerStep split;
  split.kind = PreTokenizerStep::Kind::kSplit;
  split.pattern = std::make_shared<Regex>(kQwen2Regex, false, vocab_path);
  split.behavior = SplitBehavior::kIsolated;
  p.pre_tokenizer.push_back(split);
  PreTokenizerStep bytes;
  bytes.kind = PreTokenizerStep::Kind::kByteLevel;
  p.pre_tokenizer.push_back(bytes);
  p.decoder.push_back(DecoderStep{});  // ByteLevel
  return std::make_unique<BpeTokenizer>(std::move(p));
}

}  // namespace unmask
