// BpeTokenizer: the encode/decode pipeline over the loaded components.
#include "tokenizer/bpe_tokenizer.h"

#include <algorithm>

#include "common.h"
#include "tokenizer/unicode.h"

namespace unmask {

BpeTokenizer::BpeTokenizer(BpePipeline pipeline) : p_(std::move(pipeline)) {
  int32_t max_id = -1;
  for (const auto& [piece, id] : p_.model->vocab()) max_id = std::max(max_id, id);
  for (const AddedToken& t : p_.added_tokens) max_id = std::max(max_id, t.id);
  const size_t n_pieces = p_.model->vocab().size() + p_.added_tokens.size();
  // note: hostile-input guard; real vocabularies are dense, and the id table is sized by max id.
  if (max_id >= 0 && static_cast<size_t>(max_id) > 4 * n_pieces + 65536)
    fail_input(p_.source + ": token ids are too sparse (highest id " + std::to_string(max_id) + " for " +
               std::to_string(n_pieces) + " pieces)");
  id_to_piece_.resize(static_cast<size_t>(max_id + 1));
  for (const auto& [piece, id] : p_.model->vocab()) id_to_piece_[id] = piece;

  std::vector<AddedToken> raw, normalized;
  special_.assign(id_to_piece_.size(), false);
  for (const AddedToken& t : p_.added_tokens) {
    id_to_piece_[t.id] = t.content;
    special_[t.id] = t.special;
    added_ids_[t.content] = t.id;
    if (!t.normalized) {
      raw.push_back(t);
    } else {
      // HF matches these in normalized text, so it looks for their normalized form.
      AddedToken n = t;
      n.content = normalize(p_.normalizer, t.content);
      normalized.push_back(std::move(n));
    }
  }
  for (const std::string_view piece : id_to_piece_) longest_piece_ = std::max(longest_piece_, piece.size());
  raw_matcher_ = AddedTokenMatcher(std::move(raw));
  normalized_matcher_ = AddedTokenMatcher(std::move(normalized));
  vocab_size_ = max_id + 1;
}

std::vector<int32_t> BpeTokenizer::encode(const std::string& text) const {
  // note: HF takes only valid Unicode; invalid bytes become U+FFFD as when a caller decodes them.
  const std::string clean = unicode::is_valid_utf8(text) ? text : unicode::repair_utf8(text);
  std::vector<int32_t> ids;
  for (const TextSpan& span : raw_matcher_.split(clean)) {
    if (span.id >= 0) ids.push_back(span.id);
    else encode_plain(clean.substr(span.start, span.end - span.start), span.start == 0, ids);
  }
  return ids;
}

void BpeTokenizer::encode_plain(const std::string& text, bool at_start, std::vector<int32_t>& out) const {
  const std::string normalized = normalize(p_.normalizer, text);
  std::vector<PreToken> pieces;
  for (const TextSpan& span : normalized_matcher_.split(normalized)) {
    if (span.id >= 0) {
      out.push_back(span.id);
      continue;
    }
    pieces.clear();
    pieces.push_back({normalized.substr(span.start, span.end - span.start), at_start && span.start == 0});
    pre_tokenize(p_.pre_tokenizer, pieces);
    for (const PreToken& piece : pieces) p_.model->tokenize(piece.text, out);
  }
}

std::vector<int32_t> BpeTokenizer::wrap_single(std::vector<int32_t> ids) const {
  for (const std::vector<int32_t>& items : p_.templates) {
    std::vector<int32_t> wrapped;
    for (int32_t item : items) {
      if (item >= 0) wrapped.push_back(item);
      else wrapped.insert(wrapped.end(), ids.begin(), ids.end());
    }
    ids = std::move(wrapped);
  }
  return ids;
}

std::string_view BpeTokenizer::token_string(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < id_to_piece_.size() ? id_to_piece_[id] : std::string_view();
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    // note: an id no piece has is skipped, as HF does (no piece is the empty string).
    const std::string_view s = token_string(id);
    if (!s.empty()) tokens.emplace_back(s);
  }
  return decode_tokens(p_.decoder, std::move(tokens));
}

std::string BpeTokenizer::piece(int32_t id) const {
  const std::string_view s = token_string(id);
  return s.empty() ? "<" + std::to_string(id) + ">" : std::string(s);
}

bool BpeTokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < special_.size() && special_[id];
}

int32_t BpeTokenizer::piece_to_id(const std::string& piece) const {
  auto it = added_ids_.find(piece);
  if (it != added_ids_.end()) return it->second;
  return p_.model->find(piece);
}

}  // namespace unmask
