// Pre-tokenizer steps: regex splitting with HF's delimiter behaviors, byte-level mapping, Metaspace.
#include "tokenizer/bpe_pretokenizer.h"

#include "tokenizer/bpe_normalizer.h"
#include "tokenizer/byte_level.h"

namespace unmask {

const char* const kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

using Pieces = std::vector<std::pair<Match, bool>>;

// HF's NormalizedString::split: folds (piece, is_match) by behavior. The bool in the result
// says "remove this piece".
Pieces apply_behavior(Pieces pieces, SplitBehavior behavior) {
  Pieces out;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (auto& [m, is_match] : pieces) out.push_back({m, false});
      return out;
    case SplitBehavior::kRemoved:
      return pieces;
    case SplitBehavior::kContiguous:
      for (auto& [m, is_match] : pieces) {
        if (is_match == previous_match && !out.empty()) out.back().first.end = m.end;
        else out.push_back({m, false});
        previous_match = is_match;
      }
      return out;
    case SplitBehavior::kMergedWithPrevious:
      for (auto& [m, is_match] : pieces) {
        if (is_match && !previous_match && !out.empty()) out.back().first.end = m.end;
        else out.push_back({m, false});
        previous_match = is_match;
      }
      return out;
    case SplitBehavior::kMergedWithNext:
      for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
        if (it->second && !previous_match && !out.empty()) out.back().first.start = it->first.start;
        else out.push_back({it->first, false});
        previous_match = it->second;
      }
      return Pieces(out.rbegin(), out.rend());
  }
  return out;
}

void split(const Regex& pattern, SplitBehavior behavior, bool invert, const PreToken& in,
           std::vector<PreToken>& out) {
  Pieces pieces = match_pieces(pattern, in.text);
  if (invert)
    for (auto& p : pieces) p.second = !p.second;
  for (const auto& [m, remove] : apply_behavior(std::move(pieces), behavior)) {
    if (remove || m.start == m.end) continue;
    out.push_back({in.text.substr(m.start, m.end - m.start), in.at_start && m.start == 0});
  }
}

void byte_level_split(const PreTokenizerStep& step, const PreToken& in, std::vector<PreToken>& out) {
  PreToken piece = in;
  if (step.add_prefix_space && piece.text[0] != ' ') piece.text.insert(0, 1, ' ');
  const size_t first = out.size();
  if (step.pattern) split(*step.pattern, SplitBehavior::kIsolated, false, piece, out);
  else out.push_back(std::move(piece));
  for (size_t i = first; i < out.size(); i++) out[i].text = byte_level::encode(out[i].text);
}

void metaspace(const PreTokenizerStep& step, const PreToken& in, std::vector<PreToken>& out) {
  static const Regex space(" ", true, "metaspace");
  PreToken piece{replace_all(space, in.text, step.replacement), in.at_start};
  const bool starts = piece.text.compare(0, step.replacement.size(), step.replacement) == 0;
  if (!starts && (step.prepend == PreTokenizerStep::Prepend::kAlways ||
                  (step.prepend == PreTokenizerStep::Prepend::kFirst && piece.at_start)))
    piece.text.insert(0, step.replacement);
  if (step.pattern) split(*step.pattern, SplitBehavior::kMergedWithNext, false, piece, out);
  else out.push_back(std::move(piece));
}

}  // namespace

void pre_tokenize(const std::vector<PreTokenizerStep>& steps, std::vector<PreToken>& pieces) {
  std::vector<PreToken> next;
  for (const PreTokenizerStep& step : steps) {
    next.clear();
    for (const PreToken& piece : pieces) {
      if (piece.text.empty()) continue;
      switch (step.kind) {
        case PreTokenizerStep::Kind::kByteLevel: byte_level_split(step, piece, next); break;
        case PreTokenizerStep::Kind::kSplit: split(*step.pattern, step.behavior, step.invert, piece, next); break;
        case PreTokenizerStep::Kind::kMetaspace: metaspace(step, piece, next); break;
      }
    }
    pieces.swap(next);
  }
  std::erase_if(pieces, [](const PreToken& p) { return p.text.empty(); });
}

}  // namespace unmask
