// Names, parsing and validation of the generation settings: one validator for every input path.
#include "decode/settings.h"

#include <cmath>
#include <algorithm>
#include <cstdio>

#include "common.h"

namespace unmask {

std::string setting_name(const std::string& key, SettingNames names) {
  if (names == SettingNames::JsonKeys) return "'" + key + "'";
  std::string option = "--" + key;
  for (char& c : option)
    if (c == '_') c = '-';
  return option;
}

const char* remasking_name(Remasking r) {
  return r == Remasking::Random ? "random" : "low_confidence";
}

Remasking parse_remasking(const std::string& name, SettingNames names) {
  if (name == "low_confidence") return Remasking::LowConfidence;
  if (name == "random") return Remasking::Random;
  fail_usage(setting_name("remasking", names) + ": unknown strategy '" + name +
             "' (choose low_confidence or random)");
}

namespace {
struct AlgorithmName {
  Algorithm alg;
  const char* name;
};
constexpr AlgorithmName kAlgorithms[] = {
    {Algorithm::Llada, "llada"},           {Algorithm::Origin, "origin"},
    {Algorithm::MaskgitPlus, "maskgit_plus"}, {Algorithm::TopkMargin, "topk_margin"},
    {Algorithm::Entropy, "entropy"},       {Algorithm::Llada2, "llada2"},
};

// "1.5", "inf", "nan": the value as the engine holds it.
std::string shown(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", static_cast<double>(v));
  return buf;
}
}  // namespace

const char* algorithm_name(Algorithm a) {
  for (const AlgorithmName& n : kAlgorithms)
    if (n.alg == a) return n.name;
  return "?";
}

Algorithm parse_algorithm(const std::string& name, SettingNames names) {
  for (const AlgorithmName& n : kAlgorithms)
    if (name == n.name) return n.alg;
  fail_usage(setting_name("alg", names) + ": unknown algorithm '" + name +
             "' (choose llada, origin, maskgit_plus, topk_margin, entropy or llada2)");
}

Algorithm default_algorithm(const ModelConfig& config) {
  if (config.block_causal) return Algorithm::Llada2;
  if (config.family == "dream") return Algorithm::Entropy;
  if (config.family == "llama") return Algorithm::MaskgitPlus;
  return Algorithm::Llada;
}

const char* cache_mode_name(CacheMode m) {
  switch (m) {
    case CacheMode::Prefix: return "prefix";
    case CacheMode::Dual: return "dual";
    case CacheMode::Block: return "block";
    default: return "none";
  }
}

CacheMode parse_cache_mode(const std::string& name, SettingNames names) {
  if (name == "none") return CacheMode::None;
  if (name == "prefix") return CacheMode::Prefix;
  if (name == "dual") return CacheMode::Dual;
  if (name == "block") return CacheMode::Block;
  fail_usage(setting_name("cache", names) + ": unknown mode '" + name +
             "' (choose none, prefix, dual, or block for block-diffusion models)");
}

size_t canvas_length(size_t prompt_tokens, const GenerationSettings& s) {
  const size_t canvas = prompt_tokens + static_cast<size_t>(s.gen_length);
  if (s.alg != Algorithm::Llada2 || s.block_length < 1) return canvas;
  const size_t block = static_cast<size_t>(s.block_length);
  return (canvas + block - 1) / block * block;
}

void validate_setting_values(const GenerationSettings& s, SettingNames names) {
  auto name = [&](const char* key) { return setting_name(key, names); };
  // A float in [lo, hi], or (lo, hi] when the low end is open. NaN fails every comparison.
  auto in_range = [&](const char* key, float v, float lo, float hi, bool open_low,
                      const std::string& note = "") {
    const bool ok = std::isfinite(v) && (open_low ? v > lo : v >= lo) && v <= hi;
    if (!ok)
      fail_usage(name(key) + " must be a finite number in " + (open_low ? "(" : "[") + shown(lo) + ", " +
                 shown(hi) + "] (" + note + "got " + shown(v) + ")");
  };
  auto positive = [&](const char* key, int v, int hi) {
    if (v < 1 || v > hi)
      fail_usage(name(key) + " must be in [1, " + std::to_string(hi) + "] (got " + std::to_string(v) + ")");
  };
  positive("gen_length", s.gen_length, kMaxSteps);
  positive("block_length", s.block_length, kMaxSteps);
  positive("steps", s.steps, kMaxSteps);
  // note: below kMinTemperature, logits / T overflow a float in Dream's loop; 0 is exactly greedy.
  auto temperature = [&](const char* key, float v, const char* zero) {
    if (v == 0.f) return;
    in_range(key, v, kMinTemperature, kMaxTemperature, false, std::string("or 0: ") + zero + "; ");
  };
  temperature("temperature", s.temperature, "greedy");
  if (s.top_k < 0)
    fail_usage(name("top_k") + " must be >= 0 (0 disables it; got " + std::to_string(s.top_k) + ")");
  in_range("top_p", s.top_p, 0.f, 1.f, true, "1 disables it; ");
  in_range("cfg_scale", s.cfg_scale, 0.f, kMaxCfgScale, false, "0 disables guidance; ");
  if (s.threshold) in_range("threshold", *s.threshold, 0.f, 1.f, true);
  if (s.factor) in_range("factor", *s.factor, 0.f, kMaxFactor, true);
  temperature("alg_temp", s.alg_temp, "the most confident");
  if (s.editing_threshold) in_range("editing_threshold", *s.editing_threshold, 0.f, 1.f, false);
  if (s.max_post_steps < 0 || s.max_post_steps > kMaxSteps)
    fail_usage(name("max_post_steps") + " must be in [0, " + std::to_string(kMaxSteps) + "] (got " +
               std::to_string(s.max_post_steps) + ")");
  if (!(std::isfinite(s.eps) && s.eps > 0.f && s.eps < 1.f)) fail_usage("eps must be in (0, 1)");
}

void validate_settings(const GenerationSettings& s, size_t prompt_tokens, const ModelConfig& config,
                       SettingNames names) {
  validate_setting_values(s, names);
  auto name = [&](const char* key) { return setting_name(key, names); };
  auto need = [](bool ok, const std::string& message) {
    if (!ok) fail_usage(message);
  };
  // Block diffusion and its loop go together: the block-causal attention is trained for it.
  if (config.block_causal != (s.alg == Algorithm::Llada2))
    fail_usage(config.block_causal
                   ? name("alg") + " " + algorithm_name(s.alg) + " does not fit this block-diffusion model (" +
                         config.family + "): it runs " + name("alg") + " llada2"
                   : name("alg") + " llada2 is LLaDA2's loop for block-diffusion models; this " +
                         config.family + " model runs llada or Dream's loops");
  if (s.alg != Algorithm::Llada2) {
    need(!s.editing_threshold, name("editing_threshold") + " applies to " + name("alg") + " llada2 only");
    need(s.cache != CacheMode::Block, name("cache") + " block is exact only for block-diffusion models "
                                      "(LLaDA2); choose none, prefix or dual");
  }
  if (s.alg == Algorithm::Llada2) {
    const std::string llada2 = " does not apply to LLaDA2's loop (" + name("alg") + " llada2)";
    need(s.cache == CacheMode::None || s.cache == CacheMode::Block,
         name("cache") + " " + cache_mode_name(s.cache) + llada2 +
             ": its block cache is exact (" + name("cache") + " block, the default) or off (none)");
    need(s.cfg_scale == 0.f, name("cfg_scale") + llada2);
    need(!s.factor, name("factor") + llada2 + "; it commits by " + name("threshold"));
    need(s.remasking == Remasking::LowConfidence, name("remasking") + " random" + llada2);
    need(!s.eos_last, "--eos-last" + llada2);
    need(s.alg_temp == 0.f, name("alg_temp") + llada2);
  } else if (s.alg == Algorithm::Llada) {
    need(s.gen_length % s.block_length == 0,
         name("gen_length") + " " + std::to_string(s.gen_length) + " is not a multiple of " +
             name("block_length") + " " + std::to_string(s.block_length) +
             "; change one so that it divides the other");
    const int blocks = s.gen_length / s.block_length;
    need(s.steps % blocks == 0, name("steps") + " " + std::to_string(s.steps) + " is not divisible by the " +
                                    std::to_string(blocks) + " blocks (" + name("gen_length") + " " +
                                    std::to_string(s.gen_length) + " / " + name("block_length") + " " +
                                    std::to_string(s.block_length) + "); use a multiple of " +
                                    std::to_string(blocks));
    need(s.alg_temp == 0.f, name("alg_temp") + " applies to Dream's loop (--alg maskgit_plus, "
                            "topk_margin or entropy), not to --alg llada");
  } else {
    const std::string dream = std::string(" applies to --alg llada only, not to Dream's loop (--alg ") +
                              algorithm_name(s.alg) + ")";
    need(!s.threshold && !s.factor, name("threshold") + "/" + name("factor") + dream);
    need(s.cache == CacheMode::None, name("cache") + dream);
    need(!s.eos_last, "--eos-last" + dream);
    need(s.alg != Algorithm::Origin || s.alg_temp == 0.f,
         name("alg_temp") + " has no effect with --alg origin (it commits random positions already)");
  }
  need(!(s.threshold && s.factor), name("threshold") + " and " + name("factor") +
                                       " are alternative rules: choose one");
  need(!(s.no_eos && s.eos_last), "--no-eos and --eos-last contradict each other: choose one");
  need(prompt_tokens > 0, "the prompt is empty: give some text to continue");
  const size_t canvas = canvas_length(prompt_tokens, s);
  need(canvas <= static_cast<size_t>(config.max_seq_len),
       "prompt (" + std::to_string(prompt_tokens) + " tokens) + " + name("gen_length") + " " +
           std::to_string(s.gen_length) +
           (canvas > prompt_tokens + static_cast<size_t>(s.gen_length)
                ? ", padded to whole blocks of " + std::to_string(s.block_length) + " (" + std::to_string(canvas) + ")"
                : std::string()) +
           " exceeds the model's max_sequence_length " + std::to_string(config.max_seq_len) +
           "; shorten one of them");
}

std::vector<std::string> canvas_notes(const GenerationSettings& s, const std::vector<int32_t>& prompt,
                                      const ModelConfig& config) {
  std::vector<std::string> notes;
  const size_t prompt_tokens = prompt.size();
  if (!config.infill_prompt_masks && std::find(prompt.begin(), prompt.end(), config.mask_token_id) != prompt.end())
    notes.push_back("the prompt holds token " + std::to_string(config.mask_token_id) +
                    ", which this model also uses as its mask; it stays as written (llama-format "
                    "dLLMs keep the prompt, as DiffuLLaMA's loop does)");
  const size_t canvas = prompt_tokens + static_cast<size_t>(s.gen_length);
  if (past_trained_length(s, prompt_tokens, config))
    notes.push_back("the canvas (prompt " + std::to_string(prompt_tokens) + " + gen-length " +
                    std::to_string(s.gen_length) + " = " + std::to_string(canvas) +
                    " positions) is longer than the " + std::to_string(config.train_seq_len) +
                    " positions this model was trained on (unmask_train_seq_len); expect lower "
                    "quality past them");
  return notes;
}

bool past_trained_length(const GenerationSettings& s, size_t prompt_tokens, const ModelConfig& config) {
  return config.train_seq_len > 0 &&
         prompt_tokens + static_cast<size_t>(s.gen_length) > static_cast<size_t>(config.train_seq_len);
}

}  // namespace unmask
