// Response bodies in the shapes of OpenAI's completions and chat completions APIs.
#include "cli/serve_response.h"

#include "cli/output.h"

namespace unmask {

using json = nlohmann::json;

json usage_json(const ServeJob& job) {
  const int prompt = static_cast<int>(job.request.prompt_ids.size());
  return json{{"prompt_tokens", prompt},
              {"completion_tokens", job.completion_tokens},
              {"total_tokens", prompt + job.completion_tokens},
              {"gen_length", job.request.settings.gen_length}};
}

json unmask_stats_json(const ServeJob& job) {
  json j;
  j["steps"] = job.steps;
  j["forward_passes"] = job.forwards;
  j["stopped_early"] = job.stopped_early;
  j["masks_left"] = job.masks_left;
  j["queue_seconds"] = job.queue_seconds;
  j["seconds"] = job.run_seconds;
  j["tokens_per_second"] = job.run_seconds > 0 ? job.completion_tokens / job.run_seconds : 0.0;
  j["settings"] = settings_json(job.request.settings);
  if (!job.filled_prompt_text.empty()) j["filled_prompt"] = job.filled_prompt_text;
  return j;
}

namespace {

// The fields every body of one request repeats, around its one choice.
json with_choice(const ResponseHead& head, const char* object, json choice) {
  json j;
  j["id"] = head.id;
  j["object"] = object;
  j["created"] = head.created;
  j["model"] = head.model;
  j["choices"] = json::array({std::move(choice)});
  return j;
}

}  // namespace

json completion_json(const ResponseHead& head, const ServeJob& job) {
  json choice;
  choice["index"] = 0;
  if (head.chat) {
    choice["message"] = {{"role", "assistant"}, {"content", job.text}};
  } else {
    choice["text"] = job.text;
    choice["logprobs"] = nullptr;
  }
  choice["finish_reason"] = finish_reason_name(job.reason);
  json j = with_choice(head, head.chat ? "chat.completion" : "text_completion", std::move(choice));
  j["usage"] = usage_json(job);
  j["unmask"] = unmask_stats_json(job);
  return j;
}

json chunk_json(const ResponseHead& head, const std::string& delta, const std::string& finish_reason,
                bool first) {
  json choice;
  choice["index"] = 0;
  if (head.chat) {
    json d = json::object();
    if (first) d["role"] = "assistant";
    if (!delta.empty() || (first && finish_reason.empty())) d["content"] = delta;
    choice["delta"] = d;
  } else {
    choice["text"] = delta;
    choice["logprobs"] = nullptr;
  }
  choice["finish_reason"] = finish_reason.empty() ? json(nullptr) : json(finish_reason);
  return with_choice(head, head.chat ? "chat.completion.chunk" : "text_completion", std::move(choice));
}

}  // namespace unmask
