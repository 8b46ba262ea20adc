// Everything a run needs, loaded once: config, mapped weights, tokenizer, backend and model.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "io/config.h"
#include "io/model_dir.h"
#include "io/safetensors.h"
#include "io/tokenizer_config.h"
#include "io/weights.h"
#include "model/backend.h"
#include "model/model.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

namespace unmask {

struct Session {
  std::string model_dir;
  ModelConfig config;
  std::optional<TensorStore> store;  // engaged once loaded
  ModelWeights weights;  // host views into the mmap
  std::unique_ptr<Tokenizer> tokenizer;
  TokenizerConfig tokenizer_config;
  ChatTemplate chat;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
  double load_seconds = 0;
  // What the load assumed or chose that the user should hear of: configuration-class defaults
  // for absent keys, a file or tensor ignored. Printed once on stderr by the command line.
  std::vector<std::string> notes;
};

// Loads and validates the model directory, then uploads it to the chosen backend. `mask_id`
// (--mask-id) overrides the config's mask token, and is how llama-format dLLMs get theirs.
// `require_mask` false (unmask info) leaves mask_token_id -1 when nothing gives one; generation
// needs it.
std::unique_ptr<Session> open_session(const std::string& model_dir, const std::string& backend,
                                      int threads, std::optional<int32_t> mask_id = std::nullopt,
                                      bool require_mask = true);

// The prompt ids: the plain prompt with the tokenizer's own additions (e.g. LLaDA's BOS), or,
// with `chat`, the model's chat template around it (and `system`) encoded as is. A prompt of
// more bytes than max_sequence_length tokens could ever hold is a usage error before tokenizing.
std::vector<int32_t> encode_prompt(const Session& session, const std::string& prompt, bool chat,
                                   const std::optional<std::string>& system);
// Chat messages (and `system`) rendered with the model's template and encoded as is; the same
// size check. fail_usage when the model has no supported template.
std::vector<int32_t> encode_chat(const Session& session, std::vector<ChatMessage> messages,
                                 const std::optional<std::string>& system);

}  // namespace unmask
