// JSON and human-readable renderings of settings and run statistics.
#include "cli/output.h"

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <set>

#include "common.h"

namespace unmask {

nlohmann::json settings_json(const GenerationSettings& s) {
  nlohmann::json j;
  j["gen_length"] = s.gen_length;
  j["steps"] = s.steps;
  // Dream's loop has no blocks.
  j["block_length"] = s.alg == Algorithm::Llada || s.alg == Algorithm::Llada2 ? nlohmann::json(s.block_length)
                                                                            : nlohmann::json(nullptr);
  j["temperature"] = s.temperature;
  j["top_k"] = s.top_k;
  j["top_p"] = s.top_p;
  j["remasking"] = remasking_name(s.remasking);
  j["cfg_scale"] = s.cfg_scale;
  j["threshold"] = s.threshold ? nlohmann::json(*s.threshold) : nlohmann::json(nullptr);
  j["seed"] = s.seed;
  j["factor"] = s.factor ? nlohmann::json(*s.factor) : nlohmann::json(nullptr);
  j["eos_stop"] = s.eos_stop;
  j["no_eos"] = s.no_eos;
  j["eos_last"] = s.eos_last;
  j["cache"] = cache_mode_name(s.cache);
  j["alg"] = algorithm_name(s.alg);
  j["alg_temp"] = s.alg_temp;
  if (s.alg == Algorithm::Llada2) {  // LLaDA2.1's token editing (null: LLaDA2.0's loop)
    j["editing_threshold"] = s.editing_threshold ? nlohmann::json(*s.editing_threshold) : nlohmann::json(nullptr);
    j["max_post_steps"] = s.max_post_steps;
  }
  return j;
}

nlohmann::json stats_json(const RunStats& s) {
  nlohmann::json j;
  j["prompt_tokens"] = s.prompt_tokens;
  j["generated_tokens"] = s.generated_tokens;
  j["steps"] = s.steps;
  j["forward_passes"] = s.forward_passes;
  j["stopped_early"] = s.stopped_early;
  j["seconds"] = s.seconds;
  j["tokens_per_second"] = s.tokens_per_second();
  j["ms_per_step"] = s.ms_per_step();
  j["load_seconds"] = s.load_seconds;
  j["tokenize_seconds"] = s.tokenize_seconds;
  j["gflops_per_second"] = s.seconds > 0 ? s.flops / s.seconds / 1e9 : 0.0;
  j["backend"] = s.backend;
  j["device"] = s.device;
  j["peak_memory_bytes"] = s.peak_memory_bytes;
  j["masks_left"] = s.masks_left;
  j["full_forward_seconds"] = s.full_forward_seconds;
  j["cached_forward_seconds"] = s.cached_forward_seconds;
  for (const auto& [key, value] : s.decoding.items()) j[key] = value;
  return j;
}

nlohmann::json decoding_stats_json(const Sampler& s) {
  const std::vector<int>& commits = s.commits_per_step();
  int max_commits = 0;
  double total = 0;
  for (int c : commits) {
    max_commits = std::max(max_commits, c);
    total += c;
  }
  nlohmann::json j;
  j["forwards_per_block"] = s.steps_per_block();
  j["tokens_per_step_mean"] = commits.empty() ? 0.0 : total / static_cast<double>(commits.size());
  j["tokens_per_step_max"] = max_commits;
  j["cache_refreshes"] = s.cache_refreshes();
  j["cached_steps"] = s.cached_steps();
  if (s.settings().editing_threshold) j["edits"] = s.edits();
  return j;
}

std::string stats_line(const RunStats& s) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%d tokens in %.3f s (%.1f tok/s); %d steps, %.2f ms/step, %d forward passes%s; "
                "%.1f GFLOP/s on %s; load %.2f s",
                s.generated_tokens, s.seconds, s.tokens_per_second(), s.steps, s.ms_per_step(),
                s.forward_passes, s.stopped_early ? " (stopped early: text final)" : "",
                s.seconds > 0 ? s.flops / s.seconds / 1e9 : 0.0, s.backend.c_str(), s.load_seconds);
  return buf;
}

std::string answer_text(const Session& session, const Sampler& sampler, bool keep_special) {
  // note: a mask left unfilled stays visible in the text, whether or not the tokenizer calls it
  // special.
  return decode_continuation(*session.tokenizer, sampler.filled_prompt(), sampler.answer(),
                             session.config.stop_token_ids, keep_special, session.config.mask_token_id);
}

std::string filled_prompt_text(const Session& session, const Sampler& sampler, bool keep_special) {
  return decode_text(*session.tokenizer, sampler.filled_prompt(), {}, keep_special,
                     session.config.mask_token_id);
}

std::vector<std::string> outcome_notes(const Session& session, const Sampler& sampler, bool keep_special) {
  std::vector<std::string> notes;
  const Tokenizer& tok = *session.tokenizer;
  if (const int left = sampler.masks_left(); left > 0 && sampler.llada2_loop())
    notes.push_back(std::to_string(left) + " mask token(s) remain in the answer: LLaDA2's loop takes the "
                    "argmax over the whole vocabulary, the mask included, and a position whose argmax is "
                    "the mask stays masked (its generate() does the same)");
  else if (left > 0)
    notes.push_back(std::to_string(left) + " mask token(s) remain unfilled: LLaDA's block schedule commits as "
                    "many tokens as the answer's blocks hold, so the " + std::to_string(sampler.prompt_masks()) +
                    " mask(s) written in the prompt leave as many behind (its generate does the same); "
                    "--threshold or --factor with more --steps than answer tokens fill them");
  const std::vector<int32_t> answer = sampler.answer();
  const auto& stops = session.config.stop_token_ids;
  if (!answer.empty() && std::find(stops.begin(), stops.end(), answer[0]) != stops.end()) {
    notes.push_back("the model ended the answer at once: its first answer token is the end-of-text token '" +
                    tok.piece(answer[0]) + "' (id " + std::to_string(answer[0]) +
                    "); try another prompt, --no-eos, or a larger model");
  } else if (answer_text(session, sampler, keep_special).empty() && text_length(answer, stops) > 0) {
    notes.push_back("the answer holds only special tokens, which the text leaves out; --keep-special shows them");
  }
  return notes;
}

void finish_stdout() {
  std::cout.flush();
  const bool lost = !std::cout || std::fflush(stdout) != 0 || std::ferror(stdout);
  if (lost) fail_runtime("cannot write to standard output (disk full, or the file closed?): the output is incomplete");
}

void print_notes(const std::vector<std::string>& notes, bool quiet) {
  static std::mutex mutex;
  static std::set<std::string> said;
  if (quiet) return;
  std::lock_guard<std::mutex> lock(mutex);
  for (const std::string& n : notes)
    if (said.insert(n).second) std::cerr << "unmask: note: " << n << "\n";
}

}  // namespace unmask
