// Chat templates, implemented natively for the formats the supported models publish: LLaDA's
// Llama-3-style headers, Dream's ChatML and LLaDA2's role tags (Ling 2.0). No Jinja engine: the
// template text in tokenizer_config.json is only inspected to tell which one it is.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "io/tokenizer_config.h"

namespace unmask {

enum class ChatFormat { None, Unknown, HeaderTurns, ChatML, RoleTags };

struct ChatTemplate {
  ChatFormat format = ChatFormat::None;
  std::string bos;             // prepended to the first turn (HeaderTurns with bos_token)
  std::string default_system;  // ChatML: the system turn used when the messages have none
  std::string thinking = "off";  // RoleTags: the template's "detailed thinking" option
  const char* name() const;    // "llada (header turns)", "chatml", "llada2 (role tags)", "none", "unrecognised"
};

struct ChatMessage {
  std::string role, content;
};

ChatTemplate detect_chat_template(const TokenizerConfig& config);

// The prompt text for `messages` followed by the assistant's header, ready for Tokenizer::encode
// (special-token strings are matched there). `system`, when given, becomes the first turn unless
// the messages already start with one. fail_usage when the model has no usable template.
std::string render_chat(const ChatTemplate& chat, std::vector<ChatMessage> messages,
                        const std::optional<std::string>& system);

}  // namespace unmask
