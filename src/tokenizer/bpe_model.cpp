// BPE merging as HF's Word::merge_all: lowest rank first, leftmost on ties, stale entries skipped.
#include "tokenizer/bpe_model.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <queue>

#include "tokenizer/unicode.h"

namespace unmask {
namespace {

// Words longer than this are not cached (HF's cache has the same kind of bound).
constexpr size_t kMaxCachedWordBytes = 256;
// The cache starts over when it reaches this many words, so memory stays bounded.
constexpr size_t kMaxCachedWords = 1 << 16;

struct Symbol {
  int32_t id;
  int32_t prev, next;  // neighbours in the word; -1 at the ends
  bool removed;
};

struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

BpeModel::BpeModel(PieceMap vocab, Options options) : vocab_(std::move(vocab)), options_(options) {}

int32_t BpeModel::find(std::string_view piece) const {
  auto it = vocab_.find(piece);
  return it == vocab_.end() ? -1 : it->second;
}

std::string BpeModel::add_merge(std::string_view left, std::string_view right) {
  const int32_t a = find(left), b = find(right);
  if (a < 0) return "'" + std::string(left) + "' is not in the vocab";
  if (b < 0) return "'" + std::string(right) + "' is not in the vocab";
  scratch_.assign(left);
  scratch_.append(right);
  const int32_t merged = find(scratch_);
  if (merged < 0) return "the merged piece '" + scratch_ + "' is not in the vocab";
  // note: a repeated pair takes the later rank, as HF's HashMap insert does.
  merges_[pair_key(a, b)] = Merge{n_ranks_++, merged};
  return "";
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    const int32_t id = find(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  merge_word(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCachedWords) cache_.clear();
    cache_.emplace(std::string(word), std::move(ids));
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](int32_t id) {
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, -1, false});
    if (n > 0) symbols[n - 1].next = n;
  };
  // Characters to initial symbols, following HF's BPE::merge_word (byte fallback, unk fusing).
  int32_t pending_unk = -1;  // an unk not yet added (kept back so that fuse_unk can extend it)
  char byte_piece[7];
  for (size_t i = 0; i < word.size();) {
    const size_t n = std::min(unicode::utf8_length(static_cast<unsigned char>(word[i])), word.size() - i);
    const std::string_view ch = word.substr(i, n);
    i += n;
    const int32_t id = find(ch);
    if (id >= 0) {
      if (pending_unk >= 0) add(pending_unk), pending_unk = -1;
      add(id);
      continue;
    }
    if (options_.byte_fallback) {
      std::vector<int32_t> bytes;
      for (char c : ch) {
        std::snprintf(byte_piece, sizeof byte_piece, "<0x%02X>", static_cast<unsigned char>(c));
        const int32_t b = find(byte_piece);
        if (b < 0) break;
        bytes.push_back(b);
      }
      if (bytes.size() == ch.size()) {
        // note: HF adds these without first flushing a pending unk; kept for exactness.
        for (int32_t b : bytes) add(b);
        continue;
      }
    }
    if (options_.unk_id >= 0) {
      if (pending_unk >= 0 && !options_.fuse_unk) add(pending_unk);
      pending_unk = options_.unk_id;
    }
  }
  if (pending_unk >= 0) add(pending_unk);

  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto push_pair = [&](int32_t pos) {
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    auto it = merges_.find(pair_key(symbols[pos].id, symbols[next].id));
    if (it != merges_.end()) queue.push({it->second.rank, pos, it->second.new_id});
  };
  for (int32_t pos = 0; pos + 1 < static_cast<int32_t>(symbols.size()); pos++) push_pair(pos);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.removed || left.next < 0) continue;
    // Stale when either side changed since the candidate was queued.
    auto it = merges_.find(pair_key(left.id, symbols[left.next].id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    Symbol& right = symbols[left.next];
    left.id = top.new_id;
    right.removed = true;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (const Symbol& s : symbols)
    if (!s.removed) out.push_back(s.id);
}

}  // namespace unmask
