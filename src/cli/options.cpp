// Registration of the shared CLI options (same order as the man page) and default resolution.
#include "cli/options.h"

#include <algorithm>
#include <cstdint>
#include <limits>

#include "cli/option_checks.h"
#include "common.h"
#include "model/cpu_backend.h"

namespace unmask {

void add_common_options(CLI::App& app, CommonOptions& o, const std::vector<std::string>& formats) {
  app.add_option("-m,--model", o.model,
                 "Model directory (config.json, *.safetensors, tokenizer); default: $UNMASK_MODEL, "
                 "else the bundled model")
      ->check(non_empty());
  app.add_option("--backend", o.backend, "Compute backend: auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0: OMP_NUM_THREADS or all cores)")
      ->transform(bounded(0, max_cpu_threads(), kThreadsWhy))
      ->capture_default_str();
  if (!formats.empty()) {
    std::string names;
    for (const std::string& f : formats) names += (names.empty() ? "" : ", ") + f;
    o.format = formats.front();
    app.add_option("--format", o.format, "Output format: " + names)
        ->check(CLI::IsMember(formats))
        ->capture_default_str();
  }
  app.add_option("--mask-id", o.mask_id,
                 "Token id of [MASK], overriding config.json (llama-format dLLMs store none; "
                 "DiffuLLaMA: 811)")
      ->transform(bounded(0, std::numeric_limits<int32_t>::max()));
  app.add_flag("-q,--quiet", o.quiet, "No stats or progress on stderr");
}

void add_generation_options(CLI::App& app, GenerationOptions& o) {
  app.add_option("--gen-length", o.gen_length,
                 "Answer length in tokens (default: the model's, else 128)")
      ->transform(bounded(1, kMaxSteps));
  app.add_option("--steps", o.steps, "Sampling steps in all, at most 1048576 (default: gen-length)")
      ->transform(bounded(1, kMaxSteps));
  app.add_option("--block-length", o.block_length,
                 "Semi-autoregressive block length; must divide gen-length (default: the model's, "
                 "else 32)")
      ->transform(bounded(1, kMaxSteps));
  app.add_option("--temperature", o.temperature,
                 "Gumbel-noise temperature: 0 (greedy) or in [1e-6, 100]")
      ->transform(decimal_number())
      ->capture_default_str();
  app.add_option("--top-k", o.top_k, "Sample only among the k most likely tokens (>= 0; 0: off)")
      ->transform(bounded(0, std::numeric_limits<int32_t>::max()))
      ->capture_default_str();
  app.add_option("--top-p", o.top_p, "Nucleus sampling mass in (0, 1] (1: off)")
      ->transform(decimal_number())
      ->capture_default_str();
  app.add_option("--alg", o.alg,
                 "Unmasking loop: llada (semi-autoregressive blocks), Dream's whole-answer loop "
                 "with origin, maskgit_plus, topk_margin or entropy, or llada2 (LLaDA2's loop, for "
                 "block-diffusion models only) (default: llada for LLaDA and LLaDA-MoE models, "
                 "entropy for Dream, maskgit_plus for llama-format, llada2 for LLaDA2)")
      ->check(non_empty());
  app.add_option("--alg-temp", o.alg_temp,
                 "Dream's loop: sample the positions to commit by softmax(confidence / alg-temp): "
                 "0 (the most confident) or in [1e-6, 100]")
      ->transform(decimal_number())
      ->capture_default_str();
  app.add_option("--remasking", o.remasking,
                 "Block loop: which masked positions to commit first, low_confidence or random")
      ->capture_default_str();
  app.add_option("--cfg-scale", o.cfg_scale, "Classifier-free guidance scale in [0, 100] (0: off)")
      ->transform(decimal_number())
      ->capture_default_str();
  app.add_option("--threshold", o.threshold,
                 "Parallel decoding: also commit every position with confidence >= this value, in "
                 "(0, 1]; LLaDA2's loop: every masked position of the block above it when at least "
                 "the step's count are (default 0.95)")
      ->transform(decimal_number());
  app.add_option("--factor", o.factor,
                 "Parallel decoding: the n-th most confident position also commits while its "
                 "confidence >= 1 - factor/(n+1); factor in (0, 100]")
      ->transform(decimal_number());
  app.add_option("--cache", o.cache,
                 "KV cache across a block's steps: none, prefix or dual (approximations for "
                 "bidirectional models; none reproduces the reference), or block (exact, for "
                 "block-diffusion models; their default). Default: block for LLaDA2, else none");
  app.add_option("--editing-threshold", o.editing_threshold,
                 "LLaDA2.1 token editing (--alg llada2): rewrite a committed token of the current "
                 "block whose prediction changed with probability > this, in [0, 1] (LLaDA2.1's "
                 "default 0.9); unset: LLaDA2.0's loop, no editing")
      ->transform(decimal_number());
  app.add_option("--max-post-steps", o.max_post_steps,
                 "LLaDA2.1: editing forwards after a block's last mask is filled (default 16)")
      ->transform(bounded(0, kMaxSteps));
  app.add_option("--editing-preset", o.editing_preset,
                 "LLaDA2.1's model-card modes: quality (--threshold 0.7 --editing-threshold 0.5) "
                 "or speed (0.5 and 0.0); explicit options win")
      ->check(CLI::IsMember({"quality", "speed"}));
  app.add_option("--seed", o.seed, "Seed of the counter-based noise, in [0, 2^64 - 1]")
      ->transform(decimal_u64())
      ->capture_default_str();
  app.add_flag("--eos-stop,!--no-eos-stop", o.eos_stop,
               "Stop once the text is final (an EOS committed with nothing masked before it); "
               "never changes the text (default on)");
  app.add_flag("--no-eos", o.no_eos, "Never choose EOS/EOT (their logits are -inf)");
  app.add_flag("--eos-last", o.eos_last,
               "Give EOS/EOT picks the lowest confidence, so they are committed last");
}

void add_prompt_options(CLI::App& app, PromptOptions& o) {
  app.add_flag("--chat", o.chat,
               "Wrap the prompt in the model's chat template (LLaDA header turns or ChatML) as a "
               "user turn, followed by the assistant's header");
  app.add_option("--system", o.system, "System message for --chat");
  app.add_flag("--keep-special", o.keep_special,
               "Keep special tokens (e.g. <|eot_id|>, <s>) in the printed text; they are left out "
               "by default, and --format json / batch records always keep every id");
}

GenerationSettings resolve_settings(const GenerationOptions& o, const ModelConfig& config,
                                    SettingNames names, std::vector<std::string>* notes) {
  GenerationSettings s;
  const GenerationDefaults& d = config.defaults;
  s.gen_length = o.gen_length.value_or(d.gen_length > 0 ? d.gen_length : 128);
  const int wanted_block = d.block_length > 0 ? d.block_length : 32;
  const bool llada2 = o.alg.empty() ? default_algorithm(config) == Algorithm::Llada2 : o.alg == "llada2";
  if (llada2) {
    // LLaDA2 pads the canvas to whole blocks, so any gen length fits any block length.
    s.block_length = o.block_length.value_or(wanted_block);
  } else if (o.block_length) {
    s.block_length = *o.block_length;
  } else if (s.gen_length > 0 && s.gen_length % wanted_block == 0) {
    s.block_length = wanted_block;
  } else if (d.block_length > 0 && s.gen_length % 32 == 0) {
    s.block_length = 32;
  } else {
    s.block_length = s.gen_length;
  }
  // A block length changed to fit changes how the answer is decoded: say so (the loop of Dream
  // has no blocks).
  const bool llada_loop = o.alg.empty() ? default_algorithm(config) == Algorithm::Llada : o.alg == "llada";
  if (notes && llada_loop && !o.block_length && s.block_length != wanted_block && s.gen_length > 0)
    notes->push_back("block length " + std::to_string(wanted_block) + " (" +
                     (d.block_length > 0 ? "the model's unmask_defaults" : "the default") +
                     ") does not divide " + setting_name("gen_length", names) + " " +
                     std::to_string(s.gen_length) + ", so the answer is decoded in blocks of " +
                     std::to_string(s.block_length) +
                     (s.block_length == s.gen_length ? " (one block)" : "") +
                     "; quality may drop: pass a gen length that is a multiple of " +
                     std::to_string(wanted_block) + ", or " + setting_name("block_length", names));
  if (o.steps) {
    s.steps = *o.steps;
  } else if (!o.gen_length && d.steps > 0) {
    s.steps = d.steps;
  } else {
    s.steps = llada2 ? s.block_length : s.gen_length;
  }
  // note: + 0.f turns a typed -0 into 0, so records never show -0.0.
  s.temperature = o.temperature + 0.f;
  s.top_k = o.top_k;
  s.top_p = o.top_p;
  s.remasking = parse_remasking(o.remasking, names);
  s.cfg_scale = o.cfg_scale + 0.f;
  s.threshold = o.threshold;
  s.factor = o.factor;
  s.no_eos = o.no_eos;
  s.eos_last = o.eos_last;
  s.cache = o.cache.empty() ? (llada2 ? CacheMode::Block : CacheMode::None) : parse_cache_mode(o.cache, names);
  if (!o.editing_preset.empty() && !llada2)
    fail_usage(setting_name("editing_preset", names) + " applies to " + setting_name("alg", names) +
               " llada2 (LLaDA2.1) only");
  const bool speed = o.editing_preset == "speed";
  if (llada2 && !s.threshold) s.threshold = o.editing_preset.empty() ? kLlada2Threshold : speed ? 0.5f : 0.7f;
  s.editing_threshold = o.editing_threshold;
  if (!s.editing_threshold && !o.editing_preset.empty()) s.editing_threshold = speed ? 0.f : 0.5f;
  s.max_post_steps = o.max_post_steps.value_or(kLlada2MaxPostSteps);
  if (o.max_post_steps && !s.editing_threshold)
    fail_usage(setting_name("max_post_steps", names) + " applies to LLaDA2.1's editing loop: give " +
               setting_name("editing_threshold", names) + " too");
  s.seed = o.seed;
  s.eos_stop = o.eos_stop;
  s.alg = o.alg.empty() ? default_algorithm(config) : parse_algorithm(o.alg, names);
  s.alg_temp = o.alg_temp + 0.f;
  if (s.alg != Algorithm::Llada && s.alg != Algorithm::Llada2) {
    if (o.block_length)
      fail_usage(setting_name("block_length", names) + " applies to " + setting_name("alg", names) +
                 " llada only (Dream's loop has no blocks)");
    if (s.remasking != Remasking::LowConfidence)
      fail_usage(setting_name("remasking", names) + " applies to " + setting_name("alg", names) +
                 " llada only; Dream's loop chooses by " + setting_name("alg", names));
  }
  return s;
}

}  // namespace unmask
