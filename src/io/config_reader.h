// Typed, range-checked access to one JSON object of a config file; every error names the file
// and the key. Shared by the LLaDA parser (config.cpp) and the Hugging Face-style one (config_hf.cpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common.h"
#include "io/config.h"
#include "io/safetensors.h"  // printable()

namespace unmask::config_detail {

using json = nlohmann::json;

// note: sizes and ids are capped at int32 so every downstream product of two of them fits int64.
constexpr int64_t kMaxInt = std::numeric_limits<int32_t>::max();

inline std::string describe(const json& v) {
  if (v.is_string()) return "\"" + printable(v.get<std::string>(), 40) + "\"";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return printable(v.dump(), 40);
}

// Typed access to one JSON object; `prefix` names the enclosing object in messages.
class Reader {
 public:
  // `assumed`, when given, collects "key value" for every absent key given its family's
  // configuration-class default through the class_* getters.
  Reader(const json& obj, const std::string& path, const std::string& prefix = "",
         std::vector<std::string>* assumed = nullptr)
      : obj_(obj), path_(path), prefix_(prefix), assumed_(assumed) {}

  // The value, or nullptr when absent or null (HF configs write null for "use the default").
  const json* get(const std::string& key) const {
    auto it = obj_.find(key);
    return (it == obj_.end() || it->is_null()) ? nullptr : &*it;
  }
  // Whether the key is written at all (null included): some classes treat null and absent apart.
  bool has(const std::string& key) const { return obj_.contains(key); }

  [[noreturn]] void fail(const std::string& what) const { fail_input(path_ + ": " + what); }
  [[noreturn]] void fail_key(const std::string& key, const std::string& what) const {
    fail_input(path_ + ": key '" + prefix_ + key + "' " + what);
  }
  [[noreturn]] void bad(const std::string& key, const std::string& what, const json& v) const {
    fail_key(key, what + " (got " + describe(v) + ")");
  }

  const json& required(const std::string& key) const {
    const json* v = get(key);
    if (v == nullptr) fail_input(path_ + ": missing required key '" + prefix_ + key + "'");
    return *v;
  }

  // An integer in [lo, kMaxInt]; lo is 1 for sizes, 0 for token ids.
  int64_t integer(const std::string& key, const json& v, int64_t lo) const {
    const char* what = lo > 0 ? "must be a positive integer" : "must be a non-negative integer";
    if (!v.is_number_integer()) bad(key, what, v);
    if (v.is_number_unsigned() ? v.get<uint64_t>() > static_cast<uint64_t>(kMaxInt)
                               : v.get<int64_t>() > kMaxInt) {
      bad(key, "must be at most " + std::to_string(kMaxInt), v);
    }
    if (v.get<int64_t>() < lo) bad(key, what, v);
    return v.get<int64_t>();
  }
  int64_t required_int(const std::string& key, int64_t lo = 1) const {
    return integer(key, required(key), lo);
  }
  int64_t optional_int(const std::string& key, int64_t fallback, int64_t lo = 1) const {
    const json* v = get(key);
    return v ? integer(key, *v, lo) : fallback;
  }

  // A positive number that fits a float (the engine computes in float), and below `below` when
  // given (eps must be < 1).
  double positive_number(const std::string& key, double fallback, double below = 0) const {
    const json* v = get(key);
    if (v == nullptr) return fallback;
    const double d = v->is_number() ? v->get<double>() : 0;
    if (!v->is_number() || !(d > 0) || !std::isfinite(d)) bad(key, "must be a positive number", *v);
    if (d > std::numeric_limits<float>::max()) bad(key, "must fit a float (at most 3.4e38)", *v);
    if (below > 0 && !(d < below)) bad(key, "must be below " + describe(json(below)), *v);
    return d;
  }

  bool boolean(const std::string& key, bool fallback) const {
    const json* v = get(key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) bad(key, "must be true or false", *v);
    return v->get<bool>();
  }

  // The same getters for keys whose absence means the configuration class's default, which is
  // recorded (README: "config.json keys"), so the user learns what was assumed.
  int64_t class_int(const std::string& key, int64_t class_default) const {
    if (!get(key)) assume(key, std::to_string(class_default));
    return optional_int(key, class_default);
  }
  double class_number(const std::string& key, double class_default, double below = 0) const {
    if (!get(key)) assume(key, shown(class_default));
    return positive_number(key, class_default, below);
  }
  bool class_boolean(const std::string& key, bool class_default) const {
    if (!get(key)) assume(key, class_default ? "true" : "false");
    return boolean(key, class_default);
  }
  void assume(const std::string& key, const std::string& value) const {
    if (assumed_) assumed_->push_back(prefix_ + key + " " + value);
  }
  const std::string& path() const { return path_; }

 private:
  static std::string shown(double v) {
    std::ostringstream os;
    os << v;
    return os.str();
  }

  const json& obj_;
  const std::string& path_;
  std::string prefix_;
  std::vector<std::string>* assumed_;
};

// RoPE: the theta from "rope_theta" or the newer "rope_parameters": {"rope_type", "rope_theta"};
// every scaled rope type, in "rope_parameters" or "rope_scaling", is refused by key.
double read_rope_theta(const Reader& r, double class_default);

// Sizes and switches of Hugging Face-style configs (Dream/Qwen2, Llama): config_hf.cpp.
void read_hf_sizes(const Reader& r, ModelConfig& c);
// Sizes, switches and experts of LLaDA2.x and LLaDA-MoE configs: config_moe.cpp.
void read_llada2_sizes(const Reader& r, ModelConfig& c);
void read_llada_moe_sizes(const Reader& r, ModelConfig& c);

}  // namespace unmask::config_detail
