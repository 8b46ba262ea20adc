// tokenizer.json -> BpePipeline: each Hugging Face component checked and translated once.
#include "tokenizer/bpe_json.h"
#include "tokenizer/bpe_tokenizer.h"

namespace unmask {
namespace {

using bpe_json::json;
using bpe_json::Node;

const char* const kNormalizers = "NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Strip, Sequence";
const char* const kPreTokenizers = "ByteLevel, Split, Digits, Metaspace, Sequence";
const char* const kDecoders = "ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence";
const char* const kPostProcessors = "ByteLevel, TemplateProcessing, RobertaProcessing, BertProcessing, Sequence";

[[noreturn]] void unsupported(const Node& n, const std::string& type, const char* supported) {
  n.fail(n.at() + " type '" + type + "' is not supported (supported: " + supported + ")");
}

// Hostile-input guard: Sequences are walked recursively.
void check_depth(const Node& n, int depth) {
  if (depth > 32) n.fail_here("nests Sequences more than 32 deep");
}

// {"String": "..."} or {"Regex": "..."}.
std::shared_ptr<const Regex> pattern(const Node& n) {
  const json& v = n.object();
  if (v.contains("String")) return std::make_shared<Regex>(n["String"].string(), true, n.file() + ": " + n.at());
  if (v.contains("Regex")) return std::make_shared<Regex>(n["Regex"].string(), false, n.file() + ": " + n.at());
  n.fail_here("must be {\"String\": ...} or {\"Regex\": ...}");
}

// A string holding exactly one character (Metaspace replacement, Strip content).
std::string one_char(const Node& n) {
  const std::string s = n.string();
  if (s.empty() || !unicode::is_valid_utf8(s) || unicode::utf8_length(static_cast<unsigned char>(s[0])) != s.size())
    n.fail_here("must be a single character");
  return s;
}

PreTokenizerStep::Prepend prepend_scheme(const Node& n) {
  if (n.has("prepend_scheme")) {
    const std::string s = n["prepend_scheme"].string();
    if (s == "always") return PreTokenizerStep::Prepend::kAlways;
    if (s == "first") return PreTokenizerStep::Prepend::kFirst;
    if (s == "never") return PreTokenizerStep::Prepend::kNever;
    n["prepend_scheme"].fail_here("must be \"always\", \"first\" or \"never\" (got \"" + s + "\")");
  }
  // Files written before prepend_scheme existed say add_prefix_space.
  return n.get_bool("add_prefix_space", true) ? PreTokenizerStep::Prepend::kAlways
                                              : PreTokenizerStep::Prepend::kNever;
}

void add_normalizer(const Node& n, std::vector<NormalizerStep>& steps, int depth = 0) {
  const std::string type = n["type"].string();
  NormalizerStep s;
  if (type == "Sequence") {
    check_depth(n, depth);
    const Node list = n["normalizers"];
    for (size_t i = 0; i < list.array().size(); i++) add_normalizer(list.item(i), steps, depth + 1);
    return;
  }
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    s.kind = NormalizerStep::Kind::kForm;
    s.form = type == "NFC"    ? unicode::NormalForm::kNfc
             : type == "NFD"  ? unicode::NormalForm::kNfd
             : type == "NFKC" ? unicode::NormalForm::kNfkc
                              : unicode::NormalForm::kNfkd;
  } else if (type == "Lowercase") {
    s.kind = NormalizerStep::Kind::kLowercase;
  } else if (type == "Prepend") {
    s.kind = NormalizerStep::Kind::kPrepend;
    s.text = n["prepend"].string();
  } else if (type == "Replace") {
    s.kind = NormalizerStep::Kind::kReplace;
    s.pattern = pattern(n["pattern"]);
    s.text = n["content"].string();
  } else if (type == "Strip") {
    s.kind = NormalizerStep::Kind::kStrip;
    s.strip_left = n.get_bool("strip_left", true);
    s.strip_right = n.get_bool("strip_right", true);
  } else {
    unsupported(n, type, kNormalizers);
  }
  steps.push_back(std::move(s));
}

SplitBehavior split_behavior(const Node& n) {
  const std::string b = n.string();
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  n.fail_here("'" + b + "' is not a split behavior (Removed, Isolated, MergedWithPrevious, "
              "MergedWithNext, Contiguous)");
}

void add_pre_tokenizer(const Node& n, std::vector<PreTokenizerStep>& steps, int depth = 0) {
  const std::string type = n["type"].string();
  PreTokenizerStep s;
  if (type == "Sequence") {
    check_depth(n, depth);
    const Node list = n["pretokenizers"];
    for (size_t i = 0; i < list.array().size(); i++) add_pre_tokenizer(list.item(i), steps, depth + 1);
    return;
  }
  if (type == "ByteLevel") {
    s.kind = PreTokenizerStep::Kind::kByteLevel;
    s.add_prefix_space = n.get_bool("add_prefix_space", true);
    if (n.get_bool("use_regex", true)) s.pattern = std::make_shared<Regex>(kGpt2Regex, false, n.file());
  } else if (type == "Split") {
    s.kind = PreTokenizerStep::Kind::kSplit;
    s.pattern = pattern(n["pattern"]);
    s.behavior = split_behavior(n["behavior"]);
    s.invert = n.get_bool("invert", false);
  } else if (type == "Digits") {
    // HF splits on each char::is_numeric character, i.e. the general categories Nd, Nl, No.
    s.kind = PreTokenizerStep::Kind::kSplit;
    s.pattern = std::make_shared<Regex>("\\p{N}", false, n.file());
    s.behavior = n.get_bool("individual_digits", false) ? SplitBehavior::kIsolated : SplitBehavior::kContiguous;
  } else if (type == "Metaspace") {
    s.kind = PreTokenizerStep::Kind::kMetaspace;
    s.replacement = one_char(n["replacement"]);
    s.prepend = prepend_scheme(n);
    if (n.get_bool("split", true)) s.pattern = std::make_shared<Regex>(s.replacement, true, n.file());
  } else {
    unsupported(n, type, kPreTokenizers);
  }
  steps.push_back(std::move(s));
}

void add_decoder(const Node& n, std::vector<DecoderStep>& steps, int depth = 0) {
  const std::string type = n["type"].string();
  DecoderStep s;
  if (type == "Sequence") {
    check_depth(n, depth);
    const Node list = n["decoders"];
    for (size_t i = 0; i < list.array().size(); i++) add_decoder(list.item(i), steps, depth + 1);
    return;
  }
  if (type == "ByteLevel") {
    s.kind = DecoderStep::Kind::kByteLevel;
  } else if (type == "Replace") {
    s.kind = DecoderStep::Kind::kReplace;
    s.pattern = pattern(n["pattern"]);
    s.content = n["content"].string();
  } else if (type == "ByteFallback") {
    s.kind = DecoderStep::Kind::kByteFallback;
  } else if (type == "Fuse") {
    s.kind = DecoderStep::Kind::kFuse;
  } else if (type == "Strip") {
    s.kind = DecoderStep::Kind::kStrip;
    s.content = one_char(n["content"]);
    s.strip_start = static_cast<size_t>(n["start"].id());
    s.strip_stop = static_cast<size_t>(n["stop"].id());
  } else if (type == "Metaspace") {
    s.kind = DecoderStep::Kind::kMetaspace;
    s.content = one_char(n["replacement"]);
    s.metaspace_prepend = prepend_scheme(n) != PreTokenizerStep::Prepend::kNever;
  } else {
    unsupported(n, type, kDecoders);
  }
  steps.push_back(std::move(s));
}

// ["<s>", 0] of RobertaProcessing / BertProcessing.
int32_t token_pair_id(const Node& n) {
  if (n.array().size() != 2) n.fail_here("must be [token, id]");
  return n.item(1).id();
}

void add_post_processor(const Node& n, std::vector<std::vector<int32_t>>& templates, int depth = 0) {
  const std::string type = n["type"].string();
  if (type == "Sequence") {
    check_depth(n, depth);
    const Node list = n["processors"];
    for (size_t i = 0; i < list.array().size(); i++) add_post_processor(list.item(i), templates, depth + 1);
  } else if (type == "ByteLevel") {
    // Only trims offsets, which unmask does not report.
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    templates.push_back({token_pair_id(n["cls"]), -1, token_pair_id(n["sep"])});
  } else if (type == "TemplateProcessing") {
    const Node single = n["single"];
    const Node specials = n["special_tokens"];
    specials.object();
    std::vector<int32_t> items;
    for (size_t i = 0; i < single.array().size(); i++) {
      const Node item = single.item(i);
      if (item.has("Sequence")) {
        const std::string which = item["Sequence"]["id"].string();
        if (which != "A") item.fail_here("names sequence '" + which + "'; a single template has only A");
        items.push_back(-1);
      } else if (item.has("SpecialToken")) {
        const std::string name = item["SpecialToken"]["id"].string();
        if (!specials.has(name.c_str())) specials.fail("missing key '" + specials.at() + "." + name + "'");
        const Node ids = specials[name.c_str()]["ids"];
        for (size_t k = 0; k < ids.array().size(); k++) items.push_back(ids.item(k).id());
      } else {
        item.fail_here("must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
    templates.push_back(std::move(items));
  } else {
    unsupported(n, type, kPostProcessors);
  }
}

std::unique_ptr<BpeModel> bpe_model(const Node& n, bpe_json::TokenizerJson& file) {
  const std::string type = n.get_string("type", "BPE");
  if (type != "BPE") n.fail(n.at() + " type '" + type + "' is not supported (supported: BPE)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (n.has(key) && !n[key].string().empty())
      n[key].fail_here("is set; BPE with a subword prefix or word suffix is not supported");
  if (n.has("dropout") && n["dropout"].value().is_number() && n["dropout"].value().get<double>() > 0)
    n["dropout"].fail_here("is above 0; BPE dropout makes encoding random and is not supported");
  // The streamed parse took the entries out; these checks report a missing or mistyped key.
  n["vocab"].object();
  n["merges"].array();
  if (!file.vocab_streamed || !file.merges_streamed) n.fail(n.at() + ": vocab or merges not where expected");

  PieceMap vocab;
  vocab.reserve(file.vocab.size());
  for (auto& [piece, id] : file.vocab) vocab.emplace(std::move(piece), id);
  file.vocab = {};
  BpeModel::Options options;
  options.byte_fallback = n.get_bool("byte_fallback", false);
  options.fuse_unk = n.get_bool("fuse_unk", false);
  options.ignore_merges = n.get_bool("ignore_merges", false);
  if (n.has("unk_token")) {
    const std::string unk = n["unk_token"].string();
    auto it = vocab.find(unk);
    if (it == vocab.end()) n["unk_token"].fail_here("'" + unk + "' is not in the vocab");
    options.unk_id = it->second;
  }
  auto model = std::make_unique<BpeModel>(std::move(vocab), options);
  for (size_t i = 0; i < file.merges.size(); i++) {
    const std::string error = model->add_merge(file.merges[i].first, file.merges[i].second);
    if (!error.empty()) n.fail("key '" + n.at() + ".merges[" + std::to_string(i) + "]': " + error);
  }
  file.merges = {};
  return model;
}

std::vector<AddedToken> added_tokens(const Node& list) {
  std::vector<AddedToken> tokens;
  for (size_t i = 0; i < list.array().size(); i++) {
    const Node n = list.item(i);
    tokens.push_back(bpe_json::read_added_token(n, n["id"].id()));
  }
  return tokens;
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& path) {
  bpe_json::TokenizerJson file = bpe_json::parse_tokenizer_json(path);
  const Node root(file.doc, path, "");
  root.object();
  BpePipeline p;
  p.kind = "bpe (tokenizer.json)";
  p.source = path;
  // The model first: a WordPiece or Unigram file is best told apart by that.
  p.model = bpe_model(root["model"], file);
  if (root.has("normalizer")) add_normalizer(root["normalizer"], p.normalizer);
  if (root.has("pre_tokenizer")) add_pre_tokenizer(root["pre_tokenizer"], p.pre_tokenizer);
  if (root.has("post_processor")) add_post_processor(root["post_processor"], p.templates);
  if (root.has("decoder")) add_decoder(root["decoder"], p.decoder);
  if (root.has("added_tokens")) p.added_tokens = added_tokens(root["added_tokens"]);
  return std::make_unique<BpeTokenizer>(std::move(p));
}

}  // namespace unmask
