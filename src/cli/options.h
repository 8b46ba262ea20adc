// Command-line options shared by the subcommands, and their resolution into GenerationSettings.
#pragma once

#include <CLI/CLI.hpp>

#include <optional>
#include <string>
#include <vector>

#include "decode/sampler.h"
#include "io/config.h"

namespace unmask {

struct CommonOptions {
  std::string model;          // empty: resolve_model_dir's search
  std::string backend = "auto";
  int threads = 0;            // 0: OpenMP's default (OMP_NUM_THREADS or all cores)
  std::string format = "text";
  bool quiet = false;
  std::optional<int32_t> mask_id;  // --mask-id: overrides the config's (llama-format dLLMs need it)
};

// How the prompt becomes ids (plain, or inside the model's chat template), and how ids become
// the printed text.
struct PromptOptions {
  bool chat = false;
  std::optional<std::string> system;
  bool keep_special = false;  // print special tokens (<|eot_id|>, <s>) in the text too
};

// Generation options as typed by the user; unset ones fall back to the model's defaults.
struct GenerationOptions {
  std::optional<int> gen_length, steps, block_length;
  float temperature = 0.f;
  int top_k = 0;
  float top_p = 1.f;
  std::string remasking = "low_confidence";
  float cfg_scale = 0.f;
  std::optional<float> threshold;
  std::optional<float> factor;
  uint64_t seed = 0;
  bool eos_stop = true;
  bool no_eos = false;
  bool eos_last = false;
  std::string cache;  // empty: block for block-diffusion models, else none
  std::string alg;  // empty: the family's default loop
  float alg_temp = 0.f;
  // LLaDA2.1's token editing (the llada2 loop): unset thresholds come from the preset, else
  // LLaDA2's defaults (threshold 0.95; no editing: LLaDA2.0's loop).
  std::optional<float> editing_threshold;
  std::optional<int> max_post_steps;
  std::string editing_preset;  // "", "quality" or "speed" (LLaDA2.1's model card modes)
};

// `formats`: the choices of --format, the first being the default; empty: no --format option.
void add_common_options(CLI::App& app, CommonOptions& o,
                        const std::vector<std::string>& formats = {"text", "json"});
void add_generation_options(CLI::App& app, GenerationOptions& o);
void add_prompt_options(CLI::App& app, PromptOptions& o);

// Defaults: gen-length from config.json's "unmask_defaults" else 128; block-length from there
// (else 32) when it divides gen-length, else 32 when that does, else gen-length; steps =
// gen-length. LLaDA2's loop (block-diffusion models): block-length from there else 32 whatever
// the gen-length, steps = block-length (its steps are per block), threshold 0.95, cache block. `names` styles the names in errors and notes; `notes` (when given) receives a line
// when a block length had to change to fit the gen length. Throws fail_usage on unknown names.
GenerationSettings resolve_settings(const GenerationOptions& o, const ModelConfig& config,
                                    SettingNames names = SettingNames::Options,
                                    std::vector<std::string>* notes = nullptr);

// Why --threads (and OMP_NUM_THREADS) is bounded.
inline constexpr const char* kThreadsWhy =
    "at most 4 per core (and at least 8): more only oversubscribe the cores, and each thread "
    "allocates its own scratch";
// The --batch-size limit (batch and bench): each request in flight reserves activation memory.
constexpr int kMaxBatchSize = 1024;

}  // namespace unmask
