// Generation settings of one request, their names and their validation (the same checks for the
// command line, batch lines and server requests).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <cstdint>
#include <string>
#include <vector>

#include "io/config.h"

namespace unmask {

enum class Remasking { LowConfidence, Random };
// Llada: LLaDA's block loop (confidence by --remasking). The others are Dream's loop, named as
// its reference names them: origin (random positions at the scheduled rate), and the ones that
// commit the most confident positions by max probability, top-1 minus top-2, or negative entropy.
// Llada2: LLaDA2's loop for block-diffusion models (its generate(); with an editing threshold,
// LLaDA2.1's token-editing loop).
enum class Algorithm { Llada, Origin, MaskgitPlus, TopkMargin, Entropy, Llada2 };
// KV caching across the steps of a block. Prefix and dual (Fast-dLLM) approximate bidirectional
// models, never on by default; block is exact for block-causal models (LLaDA2: the keys and
// values of finished blocks never change) and their default.
enum class CacheMode { None, Prefix, Dual, Block };

// How an error message names a setting: as a command-line option ("--gen-length") or as the JSON
// key of a batch line or a server request ("'gen_length'").
enum class SettingNames { Options, JsonKeys };
// `key` is the JSON spelling ("gen_length"); the option spelling swaps '_' for '-'.
std::string setting_name(const std::string& key, SettingNames names);

const char* remasking_name(Remasking r);
// fail_usage on unknown names, naming the setting in the `names` style.
Remasking parse_remasking(const std::string& name, SettingNames names = SettingNames::Options);
const char* algorithm_name(Algorithm a);
Algorithm parse_algorithm(const std::string& name, SettingNames names = SettingNames::Options);
// Dream runs its own loop by default; so do llama-format dLLMs (adapted the same way); LLaDA
// and the bundled model run the block loop.
Algorithm default_algorithm(const ModelConfig& config);
const char* cache_mode_name(CacheMode m);
CacheMode parse_cache_mode(const std::string& name, SettingNames names = SettingNames::Options);

struct GenerationSettings {
  int gen_length = 128;
  int steps = 128;
  int block_length = 32;
  float temperature = 0.f;
  int top_k = 0;
  float top_p = 1.f;
  Remasking remasking = Remasking::LowConfidence;
  float cfg_scale = 0.f;
  std::optional<float> threshold;  // parallel decoding: commit every confidence >= threshold
  std::optional<float> factor;     // parallel decoding: the n-th best commits if conf >= 1 - f/(n+1)
  uint64_t seed = 0;
  bool eos_stop = true;            // text-preserving early exit
  bool no_eos = false;             // EOS/EOT logits -inf: never chosen
  bool eos_last = false;           // EOS/EOT picks get the lowest confidence: committed last
  CacheMode cache = CacheMode::None;
  Algorithm alg = Algorithm::Llada;
  float alg_temp = 0.f;            // Dream: > 0 samples the committed positions by softmax(conf / alg_temp)
  float eps = 1e-3f;               // Dream: the last timestep
  // LLaDA2.1 (the llada2 loop): set, committed tokens of the current block whose argmax changed
  // with probability > this are rewritten (token editing); unset: LLaDA2.0's loop.
  std::optional<float> editing_threshold;
  int max_post_steps = 16;         // LLaDA2.1: forwards after a block's last mask is filled
};

// LLaDA2's defaults (its generate()): mask-to-token threshold, and LLaDA2.1's post steps.
constexpr float kLlada2Threshold = 0.95f;
constexpr int kLlada2MaxPostSteps = 16;
// LLaDA2.1's loop at temperature > 0 ends a block that runs this many forwards per block
// position without finishing (the mask token keeps winning): an error, not a hang.
constexpr int kLlada2IterationsPerPosition = 64;

// The documented ranges (README "Validated ranges", man page). Values are checked as the engine
// holds them (float, int), so a JSON number that overflows a float is caught as infinite.
constexpr int kMaxSteps = 1 << 20;          // more steps only repeat forwards that commit nothing
constexpr float kMaxTemperature = 100.f;    // temperature, alg_temp: 0, or in [kMin, kMax]
constexpr float kMinTemperature = 1e-6f;
constexpr float kMaxCfgScale = 100.f;
constexpr float kMaxFactor = 100.f;

// Canvas positions a request runs: prompt + gen_length, which LLaDA2's loop pads to whole blocks.
size_t canvas_length(size_t prompt_tokens, const GenerationSettings& s);

// Checks each value on its own: finite and within its range. fail_usage names the setting.
void validate_setting_values(const GenerationSettings& s, SettingNames names = SettingNames::Options);
// validate_setting_values, then the settings against each other, the prompt and the model;
// fail_usage says what to change.
void validate_settings(const GenerationSettings& s, size_t prompt_tokens, const ModelConfig& config,
                       SettingNames names = SettingNames::Options);

// Lines for stderr when the canvas departs from what the model was trained on (prompt + answer
// longer than config.json's unmask_train_seq_len), or when a prompt token equal to a llama-format
// model's mask stays as written. Empty when nothing is worth saying.
std::vector<std::string> canvas_notes(const GenerationSettings& s, const std::vector<int32_t>& prompt,
                                      const ModelConfig& config);
// Whether prompt + gen-length runs past unmask_train_seq_len (when the config gives it).
bool past_trained_length(const GenerationSettings& s, size_t prompt_tokens, const ModelConfig& config);

}  // namespace unmask
