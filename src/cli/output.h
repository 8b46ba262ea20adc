// Formatting of results and stats: the JSON object of --format json and the stderr summary.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "decode/engine.h"
#include "decode/sampler.h"
#include "decode/session.h"

namespace unmask {

struct RunStats {
  int prompt_tokens = 0;
  int generated_tokens = 0;   // answer tokens before the first EOS/EOT
  int steps = 0;
  int forward_passes = 0;     // model evaluations; a CFG step counts two
  bool stopped_early = false;
  double seconds = 0;         // first forward to last
  double load_seconds = 0;
  double tokenize_seconds = 0;
  double flops = 0;
  std::string backend, device;
  size_t peak_memory_bytes = 0;
  int masks_left = 0;         // masks the fixed schedule left unfilled (infilling)
  nlohmann::json decoding;            // decoding_stats_json of the request
  double full_forward_seconds = 0;    // forwards over whole canvases
  double cached_forward_seconds = 0;  // forwards that reused the KV cache

  double tokens_per_second() const { return seconds > 0 ? generated_tokens / seconds : 0; }
  double ms_per_step() const { return steps > 0 ? 1000.0 * seconds / steps : 0; }
};

nlohmann::json settings_json(const GenerationSettings& s);
nlohmann::json stats_json(const RunStats& s);
// How one request decoded: forward passes per block, tokens committed per step (mean, max),
// KV-cache refreshes and cached steps.
nlohmann::json decoding_stats_json(const Sampler& s);
// One line for stderr: "12 tokens in 0.41 s (29.3 tok/s), 64 steps, 6.4 ms/step, ...".
std::string stats_line(const RunStats& s);

// The answer's text as it continues the (filled) prompt: special tokens left out unless
// `keep_special`, cut at the first stop id (decode_continuation).
std::string answer_text(const Session& session, const Sampler& sampler, bool keep_special);
// The filled prompt's text (masks written in the prompt replaced by what filled them).
std::string filled_prompt_text(const Session& session, const Sampler& sampler, bool keep_special);

// Lines for stderr about a finished request that would otherwise puzzle: masks the fixed
// schedule left unfilled, an answer the model ended at once or that holds only special tokens.
std::vector<std::string> outcome_notes(const Session& session, const Sampler& sampler, bool keep_special);

// Flushes standard output and fails (exit 1) when anything written to it was lost: a full disk
// or a closed file must not pass for a complete answer.
void finish_stdout();

// Prints "unmask: note: LINE" on stderr for each line not printed before by this process
// (so a batch says each thing once); nothing under --quiet.
void print_notes(const std::vector<std::string>& notes, bool quiet);

}  // namespace unmask
