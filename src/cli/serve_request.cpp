// Reading OpenAI request bodies: every field type-checked and named in the error it causes.
#include "cli/serve_request.h"

#include <limits>

#include "cli/jsonl.h"
#include "common.h"
#include "io/safetensors.h"  // printable()

namespace unmask {

using json = nlohmann::json;

std::string api_error_type(int status) {
  return status >= 500 ? "server_error" : "invalid_request_error";
}

json api_error_json(const ApiError& e) {
  json err;
  err["message"] = e.message;
  err["type"] = api_error_type(e.status);
  err["param"] = e.param.empty() ? json(nullptr) : json(e.param);
  err["code"] = e.code.empty() ? json(nullptr) : json(e.code);
  return json{{"error", err}};
}

namespace {

[[noreturn]] void bad_request(const std::string& param, const std::string& message) {
  throw ApiError{400, message, param, ""};
}

[[noreturn]] void wrong_type(const std::string& key, const std::string& want, const json& v) {
  bad_request(key, "'" + key + "' must be " + want + " (got " + describe_json(v) + ")");
}

// The body's fields, null treated as absent (OpenAI clients send explicit nulls).
class Fields {
 public:
  explicit Fields(const json& body) : body_(body) {}
  const json* get(const std::string& key) const {
    auto it = body_.find(key);
    return it == body_.end() || it->is_null() ? nullptr : &*it;
  }
  std::optional<int> integer(const std::string& key, int64_t lo, int64_t hi) const {
    const json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_number_integer()) wrong_type(key, "an integer", *v);
    // note: the JSON library holds a non-negative integer as unsigned: both ends are checked in
    // its own type, so 0 cannot slip past a lower bound of 1.
    const bool out_of_range = v->is_number_unsigned()
                                  ? v->get<uint64_t>() > static_cast<uint64_t>(hi) ||
                                        (lo > 0 && v->get<uint64_t>() < static_cast<uint64_t>(lo))
                                  : v->get<int64_t>() > hi || v->get<int64_t>() < lo;
    if (out_of_range)
      bad_request(key, "'" + key + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                           "] (got " + v->dump() + ")");
    return static_cast<int>(v->get<int64_t>());
  }
  // As the engine holds it: a float; beyond the float range it becomes infinite, which the
  // settings validator refuses naming the key.
  std::optional<float> number(const std::string& key) const {
    const json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_number()) wrong_type(key, "a number", *v);
    return json_float(*v);
  }
  std::optional<std::string> string(const std::string& key) const {
    const json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) wrong_type(key, "a string", *v);
    return v->get<std::string>();
  }
  std::optional<bool> boolean(const std::string& key) const {
    const json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) wrong_type(key, "true or false", *v);
    return v->get<bool>();
  }

 private:
  const json& body_;
};

// OpenAI features unmask does not have: accepted at their neutral value, refused otherwise, so a
// client never gets an answer to a question it did not ask.
void refuse_unsupported(const Fields& f) {
  if (auto n = f.integer("n", 1, 128); n && *n != 1)
    bad_request("n", "'n' must be 1: unmask returns one choice per request (send the request n times, with different seeds)");
  if (auto b = f.integer("best_of", 1, 128); b && *b != 1) bad_request("best_of", "'best_of' must be 1: unmask does not rank candidates");
  if (f.boolean("echo").value_or(false)) bad_request("echo", "'echo' is not supported: the prompt is not repeated in the text");
  if (const json* l = f.get("logprobs"); l && !(l->is_boolean() && !l->get<bool>()))
    bad_request("logprobs", "'logprobs' is not supported: a diffusion LM's tokens have no left-to-right log-probabilities");
  if (f.get("suffix")) bad_request("suffix", "'suffix' is not supported; write the hole as mask tokens in the prompt instead");
  for (const char* key : {"presence_penalty", "frequency_penalty"})
    if (auto p = f.number(key); p && *p != 0.f) bad_request(key, "'" + std::string(key) + "' is not supported (only 0)");
  if (const json* lb = f.get("logit_bias"); lb && !(lb->is_object() && lb->empty()))
    bad_request("logit_bias", "'logit_bias' is not supported (only an empty object)");
  if (const json* t = f.get("tools"); t && !(t->is_array() && t->empty()))
    bad_request("tools", "'tools' is not supported: unmask does not call functions");
  if (const json* t = f.get("functions"); t && !(t->is_array() && t->empty()))
    bad_request("functions", "'functions' is not supported: unmask does not call functions");
  if (const json* r = f.get("response_format"); r && !(r->is_object() && r->value("type", "") == "text"))
    bad_request("response_format", "'response_format' is not supported beyond {\"type\": \"text\"}: the output is not constrained");
}

std::string message_content(const json& m, size_t index) {
  const std::string where = "messages[" + std::to_string(index) + "].content";
  auto it = m.find("content");
  if (it == m.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  // The newer shape: an array of parts; only text parts can be read by a text model.
  if (!it->is_array()) wrong_type(where, "a string or an array of text parts", *it);
  std::string text;
  for (const json& part : *it) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
      bad_request(where, "'" + where + "' may hold only parts {\"type\": \"text\", \"text\": \"...\"}");
    text += part["text"].get<std::string>();
  }
  return text;
}

std::vector<ChatMessage> read_messages(const Fields& f) {
  const json* ms = f.get("messages");
  if (!ms) bad_request("messages", "missing 'messages'");
  if (!ms->is_array() || ms->empty()) wrong_type("messages", "a non-empty array", *ms);
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < ms->size(); i++) {
    const json& m = (*ms)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) wrong_type(where, "an object", m);
    if (!m.contains("role") || !m["role"].is_string()) bad_request(where + ".role", "'" + where + ".role' must be a string");
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";  // OpenAI's newer name for the system turn
    if (role != "system" && role != "user" && role != "assistant")
      bad_request(where + ".role", "'" + where + ".role' must be system, developer, user or assistant (got \"" +
                                       printable(role, 40) + "\")");
    out.push_back({role, message_content(m, i)});
  }
  return out;
}

std::string read_prompt(const Fields& f) {
  const json* p = f.get("prompt");
  if (!p) bad_request("prompt", "missing 'prompt'");
  std::string prompt;
  if (p->is_string()) {
    prompt = p->get<std::string>();
  } else if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) {
    prompt = (*p)[0].get<std::string>();
  } else if (p->is_array()) {
    bad_request("prompt", "'prompt' must be a string, or an array of one string (unmask answers one prompt per request)");
  } else {
    wrong_type("prompt", "a string", *p);
  }
  if (prompt.empty()) bad_request("prompt", "'prompt' is empty; give some text");
  return prompt;
}

std::vector<std::string> read_stop(const Fields& f) {
  const json* s = f.get("stop");
  if (!s) return {};
  std::vector<std::string> out;
  if (s->is_string()) {
    out.push_back(s->get<std::string>());
  } else if (s->is_array() && s->size() <= 4) {
    for (const json& x : *s) {
      if (!x.is_string()) wrong_type("stop", "a string or an array of at most 4 strings", *s);
      out.push_back(x.get<std::string>());
    }
  } else {
    wrong_type("stop", "a string or an array of at most 4 strings", *s);
  }
  for (const std::string& x : out)
    if (x.empty()) bad_request("stop", "'stop' strings must not be empty");
  return out;
}

// The request's field named in a settings error ("'steps' 7 is not ..."): its first quoted word.
std::string quoted_field(const std::string& message) {
  const size_t a = message.find('\'');
  const size_t b = a == std::string::npos ? a : message.find('\'', a + 1);
  return b == std::string::npos ? "" : message.substr(a + 1, b - a - 1);
}

}  // namespace

ServeRequest parse_serve_request(const std::string& body, bool chat, const Session& session,
                                 const GenerationOptions& defaults) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {
    // note: a number beyond double's range (1e400) is an out_of_range error, not a parse error.
    bad_request("", std::string("the body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) bad_request("", "the body must be a JSON object (got " + describe_json(j) + ")");
  const Fields f(j);
  ServeRequest r;
  r.chat = chat;
  f.string("model");  // any name: one model is served, and /v1/models names it
  f.string("user");
  refuse_unsupported(f);
  r.stream = f.boolean("stream").value_or(false);
  if (const json* so = f.get("stream_options")) {
    if (!so->is_object()) wrong_type("stream_options", "an object", *so);
    if (so->contains("include_usage") && !(*so)["include_usage"].is_boolean())
      wrong_type("stream_options.include_usage", "true or false", (*so)["include_usage"]);
    r.include_usage = so->value("include_usage", false);
  }
  r.stop = read_stop(f);

  GenerationOptions o = defaults;
  if (auto v = f.integer("steps", 1, kMaxSteps)) o.steps = *v;
  if (auto v = f.integer("block_length", 1, kMaxSteps)) o.block_length = *v;
  if (auto v = f.integer("top_k", 0, std::numeric_limits<int32_t>::max())) o.top_k = *v;
  if (auto v = f.number("temperature")) o.temperature = *v;
  if (auto v = f.number("top_p")) o.top_p = *v;
  if (auto v = f.number("cfg_scale")) o.cfg_scale = *v;
  if (auto v = f.number("alg_temp")) o.alg_temp = *v;
  if (f.get("threshold")) o.threshold = f.number("threshold");
  if (f.get("factor")) o.factor = f.number("factor");
  // LLaDA2.1's token editing (alg llada2); null, as every field, keeps the server's value.
  if (f.get("editing_threshold")) o.editing_threshold = f.number("editing_threshold");
  if (auto v = f.integer("max_post_steps", 0, kMaxSteps)) o.max_post_steps = *v;
  if (auto v = f.string("editing_preset")) {
    // The names are checked here: the resolver takes any other string for quality.
    if (*v != "quality" && *v != "speed")
      bad_request("editing_preset", "'editing_preset' must be \"quality\" or \"speed\" (got \"" +
                                        printable(*v, 40) + "\")");
    o.editing_preset = *v;
  }
  for (const char* key : {"remasking", "alg", "cache"}) {
    const std::optional<std::string> v = f.string(key);
    if (!v) continue;
    // An empty name is refused, never read as "the default".
    if (v->empty()) bad_request(key, "'" + std::string(key) + "' is empty; leave it out for the server's default");
    (std::string(key) == "alg" ? o.alg : std::string(key) == "cache" ? o.cache : o.remasking) = *v;
  }
  if (const json* seed = f.get("seed")) {
    if (!seed->is_number_unsigned() && !(seed->is_number_integer() && seed->get<int64_t>() >= 0))
      wrong_type("seed", "a non-negative integer", *seed);
    o.seed = seed->get<uint64_t>();
  }
  // max_completion_tokens is the chat API's newer name for max_tokens.
  const char* limit_key = chat && f.get("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  const std::optional<int> max_tokens = f.integer(limit_key, 1, kMaxSteps);

  bool rounded = false;  // max_tokens was rounded up to whole blocks
  try {
    if (chat && (session.chat.format == ChatFormat::None || session.chat.format == ChatFormat::Unknown))
      bad_request("messages", std::string("this model has ") +
                                  (session.chat.format == ChatFormat::None
                                       ? "no chat template (tokenizer_config.json)"
                                       : "a chat template that is neither LLaDA's header turns nor ChatML, the two unmask implements") +
                                  "; send a plain prompt to /v1/completions instead");
    if (chat) {
      r.prompt_ids = encode_chat(session, read_messages(f), std::nullopt);
    } else {
      r.prompt_ids = encode_prompt(session, read_prompt(f), false, std::nullopt);
    }
    if (max_tokens) {
      // The canvas holds whole blocks under LLaDA's loop: max_tokens rounded up to the block
      // length; the text returned still stops at max_tokens tokens.
      GenerationSettings probe = resolve_settings(o, session.config, SettingNames::JsonKeys);
      int length = *max_tokens;
      if (probe.alg == Algorithm::Llada) {
        const int block = o.block_length ? *o.block_length
                                         : (session.config.defaults.block_length > 0 ? session.config.defaults.block_length : 32);
        if (block < 1) bad_request("block_length", "'block_length' must be at least 1");
        length = (length + block - 1) / block * block;
        o.block_length = block;
        rounded = length != *max_tokens;
      }
      o.gen_length = length;
      r.max_tokens = *max_tokens;
    }
    r.settings = resolve_settings(o, session.config, SettingNames::JsonKeys);
    validate_settings(r.settings, r.prompt_ids.size(), session.config, SettingNames::JsonKeys);
  } catch (const Error& e) {
    std::string param = quoted_field(e.what());
    std::string message = e.what();
    // The canvas length is unmask's word; the client speaks of max_tokens.
    if (message.find("'gen_length'") != std::string::npos) {
      if (param == "gen_length" || param.empty()) param = limit_key;
      if (max_tokens)
        message += " ('gen_length' is '" + std::string(limit_key) + "' " + std::to_string(*max_tokens) +
                   (rounded ? " rounded up to whole blocks)" : ")");
      else
        message += " ('gen_length' is the server's default; set '" + std::string(limit_key) + "')";
    } else if (message.rfind("the prompt is", 0) == 0) {
      param = chat ? "messages" : "prompt";
    }
    if (e.exit_code() != kExitUsage && e.exit_code() != kExitBadInput) throw;
    throw ApiError{400, message, param, ""};
  }
  return r;
}

}  // namespace unmask
