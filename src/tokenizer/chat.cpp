// The chat formats, rendered as their Jinja templates do with add_generation_prompt=True.
#include "tokenizer/chat.h"

#include <regex>

#include "common.h"

namespace unmask {

const char* ChatTemplate::name() const {
  switch (format) {
    case ChatFormat::HeaderTurns: return "llada (header turns)";
    case ChatFormat::ChatML: return "chatml";
    case ChatFormat::RoleTags: return "llada2 (role tags)";
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
  } else if (has("<role>SYSTEM</role>") && has("<role>HUMAN</role>") && has("<|role_end|>")) {
    chat.format = ChatFormat::RoleTags;
    static const std::regex thinking(R"(thinking_option\s*=\s*'(\w+)')");
    std::smatch m;
    if (std::regex_search(t, m, thinking)) chat.thinking = m[1].str();
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

std::string strip_newlines(const std::string& s, bool left, bool right) {
  size_t first = 0, last = s.size();
  while (left && first < last && s[first] == '\n') first++;
  while (right && last > first && s[last - 1] == '\n') last--;
  return s.substr(first, last - first);
}

// LLaDA2's (Ling 2.0's) template: a system turn that always carries the "detailed thinking"
// line, HUMAN/ASSISTANT/OBSERVATION turns closed by <|role_end|>; an assistant turn after the
// last user query keeps its <think> reasoning, earlier ones lose it.
std::string render_role_tags(const ChatTemplate& chat, const std::vector<ChatMessage>& messages) {
  std::string out = "<role>SYSTEM</role>";
  if (!messages.empty() && messages.front().role == "system") out += messages.front().content + "\n";
  out += "detailed thinking " + chat.thinking + "<|role_end|>";
  size_t last_query = messages.size() - 1;
  for (size_t i = messages.size(); i-- > 0;) {
    const std::string& c = messages[i].content;
    const bool tool_response = c.rfind("<tool_response>", 0) == 0 && c.size() >= 16 &&
                               c.compare(c.size() - 16, 16, "</tool_response>") == 0;
    if (messages[i].role == "user" && !tool_response) {
      last_query = i;
      break;
    }
  }
  for (size_t i = 0; i < messages.size(); i++) {
    const ChatMessage& m = messages[i];
    if (m.role == "user") {
      out += "<role>HUMAN</role>" + m.content + "<|role_end|>";
    } else if (m.role == "system" && i > 0) {
      out += "<role>SYSTEM</role>" + m.content + "<|role_end|>";
    } else if (m.role == "assistant") {
      std::string content = m.content, reasoning;
      if (const size_t end = content.find("</think>"); end != std::string::npos) {
        std::string before = strip_newlines(content.substr(0, end), false, true);
        if (const size_t open = before.rfind("<think>"); open != std::string::npos) before = before.substr(open + 7);
        reasoning = strip_newlines(before, true, false);
        content = strip_newlines(content.substr(content.rfind("</think>") + 8), true, false);
      }
      out += "<role>ASSISTANT</role>";
      out += i > last_query && !reasoning.empty()
                 ? "\n<think>\n" + strip_newlines(reasoning, true, true) + "\n</think>\n\n" + content
                 : content;
      out += "<|role_end|>";
    } else if (m.role == "tool") {
      if (i == 0 || messages[i - 1].role != "tool") out += "<role>OBSERVATION</role>";
      out += "\n<tool_response>\n" + m.content + "\n</tool_response>";
      if (i + 1 == messages.size() || messages[i + 1].role != "tool") out += "<|role_end|>";
    }
  }
  return out + "<role>ASSISTANT</role>";
}

}  // namespace

std::string render_chat(const ChatTemplate& chat, std::vector<ChatMessage> messages,
                        const std::optional<std::string>& system) {
  if (chat.format == ChatFormat::None)
    fail_usage("--chat is unsupported for this model: it has no chat template (tokenizer_config.json)");
  if (chat.format == ChatFormat::Unknown)
    fail_usage("--chat is unsupported for this model: its chat template is none of LLaDA's header "
               "turns, ChatML or LLaDA2's role tags, the formats unmask implements");
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
  if (chat.format == ChatFormat::RoleTags) return render_role_tags(chat, messages);
  if (!chat.default_system.empty() && (messages.empty() || messages.front().role != "system"))
    out += "<|im_start|>system\n" + chat.default_system + "<|im_end|>\n";
  for (const ChatMessage& m : messages)
    out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  return out + "<|im_start|>assistant\n";
}

}  // namespace unmask
