// OpenAI-style request bodies (/v1/completions, /v1/chat/completions) read into generation
// settings and prompt ids, and OpenAI's error object.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cli/options.h"
#include "decode/session.h"

namespace unmask {

// An HTTP error answer in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int status = 400;
  std::string message;
  std::string param;  // the request field at fault; empty: none
  std::string code;   // e.g. "invalid_api_key", "model_not_loaded"; empty: null
};
nlohmann::json api_error_json(const ApiError& e);
// "invalid_request_error" for 4xx, "server_error" for 5xx, as OpenAI types them.
std::string api_error_type(int status);

// One request, ready for the engine.
struct ServeRequest {
  bool chat = false;
  std::vector<int32_t> prompt_ids;
  GenerationSettings settings;
  // Answer tokens returned at most: max_tokens, while the canvas holds gen_length >= it (rounded
  // up to whole blocks under LLaDA's loop). 0: the whole canvas.
  int max_tokens = 0;
  std::vector<std::string> stop;  // stop strings, cut from the text with what follows them
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with usage
};

// Parses a request body. `defaults`: the server's command-line generation options, which a
// request's fields override. Throws ApiError (400) naming the field for malformed JSON, wrong
// types, values out of range, an empty prompt, a prompt the model's context cannot hold, chat
// on a model without a chat template, and OpenAI features unmask does not have (n > 1, echo,
// logprobs, best_of, suffix, penalties, logit_bias) when asked for with a non-neutral value.
// Fields it does not know are ignored, as OpenAI servers do. The diffusion settings are extra
// fields: steps, block_length, remasking, alg, alg_temp, cfg_scale, threshold, factor, cache
// (none, prefix, dual, or block for block-diffusion models), and LLaDA2.1's editing_threshold,
// max_post_steps and editing_preset ("quality" or "speed").
ServeRequest parse_serve_request(const std::string& body, bool chat, const Session& session,
                                 const GenerationOptions& defaults);

}  // namespace unmask
