// Loading a model directory: config -> tensors -> tokenizer -> backend -> model.
#include "decode/session.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "common.h"

namespace unmask {
namespace fs = std::filesystem;

namespace {

// The mask id: --mask-id, else config.json, else the tokenizer config's mask_token.
void resolve_mask_id(Session& s, std::optional<int32_t> option, bool require) {
  ModelConfig& c = s.config;
  if (option) {
    if (*option < 0 || *option >= c.embedding_size)
      fail_usage("--mask-id " + std::to_string(*option) + " is outside the model's " +
                 std::to_string(c.embedding_size) + " embedding rows");
    c.mask_token_id = *option;
  } else if (c.mask_token_id < 0 && !s.tokenizer_config.mask_token.empty()) {
    c.mask_token_id = s.tokenizer->piece_to_id(s.tokenizer_config.mask_token);
    if (c.mask_token_id < 0)
      fail_input(s.tokenizer_config.path + ": mask_token '" + s.tokenizer_config.mask_token +
                 "' is not a token of the tokenizer");
  }
  if (c.mask_token_id < 0 && !require) return;
  if (c.mask_token_id < 0)
    fail_input(c.path + ": no mask_token_id (llama-format dLLMs do not store it); pass --mask-id N "
               "(DiffuLLaMA: 811)");
  for (int32_t id : c.stop_token_ids) {
    if (id != c.mask_token_id) continue;
    const std::string why = "the mask id " + std::to_string(id) + " is also an end-of-text id of this model";
    if (option) fail_usage("--mask-id: " + why);
    fail_input(s.tokenizer_config.path + ": " + why);
  }
}

// Text ends at the first end-of-text or end-of-turn token. LLaDA-8B's config names only its EOS,
// while Instruct answers end with <|eot_id|>; Dream's chat turns end with <|im_end|>.
void add_tokenizer_stop_ids(Session& s) {
  for (const std::string& piece : {std::string("<|eot_id|>"), std::string("<|im_end|>"), std::string("<|role_end|>"),
                                   s.tokenizer_config.eos_token}) {
    if (piece.empty()) continue;
    const int32_t id = s.tokenizer->piece_to_id(piece);
    if (id >= 0 && id != s.config.mask_token_id) add_stop_id(s.config, id);
  }
}

}  // namespace

namespace {
// note: a text longer than the context can hold in its longest pieces cannot fit; refusing it
// before tokenizing keeps a piped file from taking the memory of the machine.
void check_prompt_bytes(const Session& session, size_t bytes) {
  const size_t most = static_cast<size_t>(session.config.max_seq_len) * session.tokenizer->longest_piece_bytes();
  if (bytes > most)
    fail_usage("the prompt is " + std::to_string(bytes) + " bytes, more than the model's " +
               std::to_string(session.config.max_seq_len) + " positions can hold (at most " +
               std::to_string(most) + " bytes); shorten it");
}
}  // namespace

std::vector<int32_t> encode_chat(const Session& session, std::vector<ChatMessage> messages,
                                 const std::optional<std::string>& system) {
  size_t bytes = system ? system->size() : 0;
  for (const ChatMessage& m : messages) bytes += m.content.size();
  check_prompt_bytes(session, bytes);
  return session.tokenizer->encode(render_chat(session.chat, std::move(messages), system));
}

std::vector<int32_t> encode_prompt(const Session& session, const std::string& prompt, bool chat,
                                   const std::optional<std::string>& system) {
  if (chat) return encode_chat(session, {{"user", prompt}}, system);
  check_prompt_bytes(session, prompt.size());
  if (system) fail_usage("--system needs --chat");
  return session.tokenizer->wrap_single(session.tokenizer->encode(prompt));
}

std::unique_ptr<Session> open_session(const std::string& model_dir, const std::string& backend,
                                      int threads, std::optional<int32_t> mask_id, bool require_mask) {
  const auto t0 = std::chrono::steady_clock::now();
  auto s = std::make_unique<Session>();
  s->model_dir = model_dir;
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) fail_input(model_dir + ": not a model directory");
  s->config = load_config((fs::path(model_dir) / "config.json").string());
  s->store.emplace(TensorStore::open_dir(model_dir));
  s->notes = s->store->notes();
  if (!s->config.assumed.empty()) {
    std::string keys;
    for (const std::string& k : s->config.assumed) keys += (keys.empty() ? "" : ", ") + k;
    s->notes.push_back(s->config.path + ": absent keys take the " + s->config.family +
                       " configuration class's defaults: " + keys);
  }
  s->weights = bind_weights(*s->store, s->config, &s->notes);
  s->tokenizer_config = load_tokenizer_config(model_dir);
  s->tokenizer = load_tokenizer(model_dir, s->tokenizer_config);
  s->chat = detect_chat_template(s->tokenizer_config);
  add_tokenizer_stop_ids(*s);
  resolve_mask_id(*s, mask_id, require_mask);
  if (s->tokenizer->vocab_size() > s->config.vocab_size)
    fail_input(model_dir + ": tokenizer has " + std::to_string(s->tokenizer->vocab_size()) +
               " pieces but config.json vocab_size is " + std::to_string(s->config.vocab_size));
  s->backend = make_backend(backend, threads);
  s->model = std::make_unique<Model>(*s->backend, s->config, s->weights);
  s->load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

}  // namespace unmask
