// Typed access to tokenizer files' JSON for the BPE loaders; every error names the file and key.
#pragma once

#include <cstdint>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common.h"
#include "io/safetensors.h"
#include "tokenizer/bpe_added_tokens.h"

namespace unmask::bpe_json {

using json = nlohmann::json;

// The whole file as text; a file that cannot be read is fail_input naming it.
inline std::string read_file(const std::string& path) { return read_whole_file(path); }

// Parsed JSON; malformed text is one line naming the file and the place.
inline json parse_file(const std::string& path) {
  const std::string text = read_file(path);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    fail_input(path + ": not valid JSON (error at byte " + std::to_string(e.byte) + ")");
  }
}

// tokenizer.json with model.vocab and model.merges streamed out of the document: a DOM of a
// 126k-piece vocab and its merges costs three times the parse (and as much again to free).
struct TokenizerJson {
  json doc;  // the file; model.vocab and model.merges are left empty where they were streamed
  bool vocab_streamed = false, merges_streamed = false;
  std::vector<std::pair<std::string, int32_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
};
// Malformed JSON, a bad vocab id or a bad merge entry is fail_input naming the file and key.
TokenizerJson parse_tokenizer_json(const std::string& path);

// vocab.json ({"piece": id, ...}) streamed the same way.
std::vector<std::pair<std::string, int32_t>> parse_vocab_json(const std::string& path);

// A non-negative integer that fits int32 (token ids).
inline bool is_id(const json& v) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  if (v.is_number_unsigned()) return v.get<uint64_t>() <= static_cast<uint64_t>(kMax);
  return v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= kMax;
}

// One JSON value of a file, with the dotted key path used in messages (e.g. "model.merges[3]").
class Node {
 public:
  Node(const json& value, const std::string& file, std::string at) : v_(value), file_(file), at_(std::move(at)) {}
  const json& value() const { return v_; }
  const std::string& at() const { return at_; }
  const std::string& file() const { return file_; }

  [[noreturn]] void fail(const std::string& what) const { fail_input(file_ + ": " + what); }
  [[noreturn]] void fail_here(const std::string& what) const { fail(key_name(at_) + " " + what); }

  bool has(const char* key) const {
    auto it = v_.find(key);
    return v_.is_object() && it != v_.end() && !it->is_null();
  }
  Node operator[](const char* key) const {
    if (!v_.is_object()) fail_here("must be an object");
    auto it = v_.find(key);
    if (it == v_.end() || it->is_null()) fail("missing key '" + child(key) + "'");
    return Node(*it, file_, child(key));
  }
  Node item(size_t i) const { return Node(v_[i], file_, at_ + "[" + std::to_string(i) + "]"); }

  std::string string() const {
    if (!v_.is_string()) fail_here("must be a string");
    return v_.get<std::string>();
  }
  const std::string& string_ref() const {
    if (!v_.is_string()) fail_here("must be a string");
    return v_.get_ref<const std::string&>();
  }
  bool boolean() const {
    if (!v_.is_boolean()) fail_here("must be true or false");
    return v_.get<bool>();
  }
  // A non-negative integer that fits int32 (token ids and counts).
  int32_t id() const {
    if (!is_id(v_)) fail_here("must be an integer in [0, 2^31)");
    return v_.get<int32_t>();
  }
  const json& array() const {
    if (!v_.is_array()) fail_here("must be a list");
    return v_;
  }
  const json& object() const {
    if (!v_.is_object()) fail_here("must be an object");
    return v_;
  }

  // Optional members: the default when absent or null.
  bool get_bool(const char* key, bool fallback) const { return has(key) ? (*this)[key].boolean() : fallback; }
  std::string get_string(const char* key, const std::string& fallback) const {
    return has(key) ? (*this)[key].string() : fallback;
  }

 private:
  std::string child(const char* key) const { return at_.empty() ? key : at_ + "." + key; }
  static std::string key_name(const std::string& at) { return at.empty() ? "the top level" : "key '" + at + "'"; }

  const json& v_;
  const std::string& file_;
  std::string at_;
};

// One added token's content and flags, as tokenizer.json's added_tokens and tokenizer_config.json's
// added_tokens_decoder both write them; normalized defaults to "not special", as in Hugging Face.
inline AddedToken read_added_token(const Node& n, int32_t id) {
  AddedToken t;
  t.id = id;
  t.content = n["content"].string();
  t.special = n.get_bool("special", false);
  t.single_word = n.get_bool("single_word", false);
  t.lstrip = n.get_bool("lstrip", false);
  t.rstrip = n.get_bool("rstrip", false);
  t.normalized = n.get_bool("normalized", !t.special);
  return t;
}

}  // namespace unmask::bpe_json
