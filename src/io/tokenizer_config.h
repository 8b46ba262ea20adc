// tokenizer_config.json: the Hugging Face file that names the special tokens and holds the chat
// template. Optional: a directory without it has no template and no named specials.
#pragma once

#include <string>

namespace unmask {

struct TokenizerConfig {
  std::string path;           // empty when the directory has no tokenizer_config.json
  std::string chat_template;  // the Jinja source, "" when none
  std::string bos_token, eos_token, mask_token;  // piece strings, "" when not given
  bool add_bos_token = false;  // Hugging Face's Llama tokenizers prepend bos_token to a plain prompt
};

// Reads `model_dir/tokenizer_config.json` if present; malformed JSON or a wrongly typed key is a
// one-line error naming the file and the key.
TokenizerConfig load_tokenizer_config(const std::string& model_dir);

}  // namespace unmask
