// OpenAI-shaped response bodies: a whole completion, and the chunks of a streamed one.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "cli/serve_scheduler.h"

namespace unmask {

// What every response and chunk of one request repeats.
struct ResponseHead {
  bool chat = false;
  std::string id;      // "cmpl-…" or "chatcmpl-…"
  std::string model;   // the served model's name
  int64_t created = 0; // Unix seconds
};

// usage: prompt_tokens, completion_tokens, total_tokens, and gen_length: the canvas the answer
// was generated on (max_tokens rounded up to whole blocks).
nlohmann::json usage_json(const ServeJob& job);
// The extra "unmask" object: steps, forward passes, seconds queued and running, settings.
nlohmann::json unmask_stats_json(const ServeJob& job);
// text_completion or chat.completion, for a finished job without error.
nlohmann::json completion_json(const ResponseHead& head, const ServeJob& job);
// One streamed chunk: `delta` text, and on the last one the finish reason (empty: none yet).
// Chat chunks carry {"role": "assistant"} in the first one (`first`).
nlohmann::json chunk_json(const ResponseHead& head, const std::string& delta,
                          const std::string& finish_reason, bool first);

}  // namespace unmask
