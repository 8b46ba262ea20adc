// The BPE model: vocab, merge ranks, and the merge loop that turns one pre-token into ids.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace unmask {

// Hash for string keys that also accepts string_view lookups (no temporary strings).
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using PieceMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  struct Options {
    bool byte_fallback = false;  // unknown characters become <0xNN> pieces
    bool fuse_unk = false;       // consecutive unknown characters become one unk
    bool ignore_merges = false;  // a whole pre-token found in the vocab is emitted as is
    int32_t unk_id = -1;         // -1: unknown characters are dropped (as HF without unk_token)
  };

  BpeModel(PieceMap vocab, Options options);

  // Adds merge `left right` with the next rank. Returns an error message, or "" on success.
  std::string add_merge(std::string_view left, std::string_view right);

  // Appends the ids of one pre-token (valid UTF-8) to `out`.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  int32_t find(std::string_view piece) const;  // -1 when not in the vocab
  const PieceMap& vocab() const { return vocab_; }
  size_t n_merges() const { return merges_.size(); }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  PieceMap vocab_;
  Options options_;
  std::unordered_map<uint64_t, Merge> merges_;  // (left id, right id) -> rank, merged id
  int32_t n_ranks_ = 0;
  std::string scratch_;  // the concatenation buffer of add_merge

  // Word cache: encode is const and may run on several threads.
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace unmask
