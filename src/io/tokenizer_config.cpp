// tokenizer_config.json → TokenizerConfig.
#include "io/tokenizer_config.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common.h"
#include "io/safetensors.h"

namespace unmask {

namespace {

using json = nlohmann::json;

// A special token is written either as its string or as {"content": "...", ...}.
std::string token_string(const json& j, const std::string& key, const std::string& path) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto content = it->find("content");
    if (content != it->end() && content->is_string()) return content->get<std::string>();
  }
  fail_input(path + ": key '" + key + "' must be a string or an object with a string 'content'");
}

}  // namespace

TokenizerConfig load_tokenizer_config(const std::string& model_dir) {
  namespace fs = std::filesystem;
  TokenizerConfig tc;
  const fs::path file = fs::path(model_dir) / "tokenizer_config.json";
  std::error_code ec;
  if (!fs::exists(file, ec)) return tc;
  tc.path = file.string();
  const json j = json::parse(read_whole_file(tc.path), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) fail_input(tc.path + ": not a valid JSON object");

  tc.bos_token = token_string(j, "bos_token", tc.path);
  tc.eos_token = token_string(j, "eos_token", tc.path);
  tc.mask_token = token_string(j, "mask_token", tc.path);
  if (auto it = j.find("add_bos_token"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) fail_input(tc.path + ": key 'add_bos_token' must be true or false");
    tc.add_bos_token = it->get<bool>();
  }
  // chat_template is a string, or a list of {name, template} of which "default" is the chat one.
  if (auto it = j.find("chat_template"); it != j.end() && !it->is_null()) {
    if (it->is_string()) {
      tc.chat_template = it->get<std::string>();
    } else if (it->is_array()) {
      for (const json& t : *it)
        if (t.is_object() && t.value("name", "") == "default" && t.contains("template") &&
            t["template"].is_string())
          tc.chat_template = t["template"].get<std::string>();
    } else {
      fail_input(tc.path + ": key 'chat_template' must be a string or a list of templates");
    }
  }
  return tc;
}

}  // namespace unmask
