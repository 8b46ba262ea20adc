// The two chat formats, rendered as their Jinja templates do with add_generation_prompt=True.
#include "tokenizer/chat.h"

#include <regex>

#include "common.h"

namespace unmask {

const char* ChatTemplate::name() const {
  switch (format) {
    case ChatFormat::HeaderTurns: return "llada (header turns)";
    case ChatFormat::ChatML: return "chatml";
    case ChatFormat::Unknown: return "unrecognised";
    default: return "none";
  }
}

ChatTemplate detect_chat_template(const TokenizerConfig& config) {
  ChatTemplate chat;
  const std::string& t = config.chat_template;
  if (t.empty()) return chat;
  const auto has = [&](const char* s) { return t.find(s) != std::string::npos; };
  if (has("<|start_header_id|>") && has("<|end_header_id|>") && has("<|eot_id|>")) {
    chat.format = ChatFormat::HeaderTurns;
    if (has("bos_token")) chat.bos = config.bos_token;
  } else if (has("<|im_start|>") && has("<|im_end|>")) {
    chat.format = ChatFormat::ChatML;
    // Qwen2-style templates insert a fixed system turn when the messages lack one; the text sits
    // in the template as a literal (Jinja "\n" escapes included), the other branch concatenates
    // messages[0]['content'] and so contains a quote.
    static const std::regex fixed_system(R"(<\|im_start\|>system(?:\\n|\n)([^'"<]*)<\|im_end\|>)");
    std::smatch m;
    if (std::regex_search(t, m, fixed_system)) {
      chat.default_system = m[1].str();
      for (size_t at; (at = chat.default_system.find("\\n")) != std::string::npos;)
        chat.default_system.replace(at, 2, "\n");
    }
  } else {
    chat.format = ChatFormat::Unknown;
  }
  return chat;
}

namespace {

// Jinja's trim filter: Python str.strip() on the ASCII whitespace that matters in prompts.
std::string trim(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t first = s.find_first_not_of(ws);
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(ws) - first + 1);
}

}  // namespace

std::string render_chat(const ChatTemplate& chat, std::vector<ChatMessage> messages,
                        const std::optional<std::string>& system) {
  if (chat.format == ChatFormat::None)
    fail_usage("--chat is unsupported for this model: it has no chat template (tokenizer_config.json)");
  if (chat.format == ChatFormat::Unknown)
    fail_usage("--chat is unsupported for this model: its chat template is neither LLaDA's header "
               "turns nor ChatML, the two unmask implements");
  if (system && (messages.empty() || messages.front().role != "system"))
    messages.insert(messages.begin(), ChatMessage{"system", *system});

  std::string out;
  if (chat.format == ChatFormat::HeaderTurns) {
    for (size_t i = 0; i < messages.size(); i++) {
      if (i == 0) out += chat.bos;
      out += "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n" +
             trim(messages[i].content) + "<|eot_id|>";
    }
    return out + "<|start_header_id|>assistant<|end_header_id|>\n\n";
  }
  if (!chat.default_system.empty() && (messages.empty() || messages.front().role != "system"))
    out += "<|im_start|>system\n" + chat.default_system + "<|im_end|>\n";
  for (const ChatMessage& m : messages)
    out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  return out + "<|im_start|>assistant\n";
}

}  // namespace unmask
