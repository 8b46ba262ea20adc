// unmask command line: generate (default), batch, bench, serve and info; errors mapped to exit codes.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/batch.h"
#include "cli/bench.h"
#include "cli/options.h"
#include "cli/output.h"
#include "cli/serve.h"
#include "cli/visual.h"
#include "common.h"
#include "decode/engine.h"
#include "decode/session.h"
#include "decode/text_stream.h"
#include "io/tensor_check.h"

namespace unmask {
namespace {

// The prompt: the words of the command line joined by spaces (as echo joins them), or stdin when
// there are none or the one word is "-". An explicitly empty prompt is a usage error and leaves
// stdin alone, so `while read p; do unmask "$p"; done < file` never swallows the file.
std::string read_prompt(const std::vector<std::string>& words, bool quiet) {
  if (!words.empty() && !(words.size() == 1 && words[0] == "-")) {
    std::string prompt;
    for (const std::string& w : words) prompt += (prompt.empty() ? "" : " ") + w;
    if (prompt.empty())
      fail_usage("the prompt argument is empty; give some text, or '-' (or nothing) to read stdin");
    return prompt;
  }
  if (!quiet && isatty(STDIN_FILENO))
    std::cerr << "unmask: reading the prompt from stdin (end it with Ctrl-D), or give it as an "
                 "argument: unmask \"And God said\"\n";
  std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

// Steps the sampler alone, redrawing its canvas after each commit.
void run_visual(Engine& engine, Sampler& sampler, const Session& session) {
  CanvasStyle style;
  style.mask_id = session.config.mask_token_id;
  style.stop_ids = session.config.stop_token_ids;
  style.color = color_wanted();
  CanvasDisplay display(stderr, *session.tokenizer, style, terminal_columns(STDERR_FILENO));
  display.draw(sampler.answer());
  while (!sampler.done()) {
    engine.step({&sampler});
    display.draw(sampler.answer());
  }
  display.finish();
}

// Steps the sampler alone, printing the answer's text on stdout as it becomes final (TextStream):
// block by block under LLaDA's loop, later under Dream's whole-answer loop. What it prints in all
// is the plain run's text.
void run_streaming(Engine& engine, Sampler& sampler, const Session& session, bool keep_special) {
  TextStream stream(*session.tokenizer, session.config.stop_token_ids, session.config.mask_token_id,
                    keep_special, {}, 0);
  bool head_printed = false;
  for (;;) {
    const std::string delta = stream.advance(sampler.filled_prompt(), sampler.final_answer(), sampler.done());
    // Infilling: the filled prompt is part of the answer; it is final before any answer text is.
    if (!head_printed && (!delta.empty() || sampler.done()) && sampler.prompt_masks() > 0) {
      std::cout << filled_prompt_text(session, sampler, keep_special);
      head_printed = true;
    }
    if (!delta.empty()) std::cout << delta << std::flush;
    if (sampler.done()) break;
    engine.step({&sampler});
  }
}

int run_generate(const CommonOptions& common, const GenerationOptions& gen,
                 const PromptOptions& prompt_options, const std::vector<std::string>& prompt_words,
                 bool visual, bool stream_flag, bool no_stream) {
  if (stream_flag && no_stream) fail_usage("--stream and --no-stream contradict each other: choose one");
  if (stream_flag && common.format == "json")
    fail_usage("--stream prints text as it becomes final; --format json prints one object at the "
               "end: choose one");
  if (stream_flag && visual)
    fail_usage("--stream and --visual both draw the answer as it fills in: choose one");
  // A person at a terminal sees the text as it becomes final; a pipe or file gets the whole text
  // at once (the same bytes), so a script never reads half an answer from a run that then fails.
  const bool stream = stream_flag || (!no_stream && !visual && common.format == "text" && isatty(STDOUT_FILENO));
  const std::string prompt = read_prompt(prompt_words, common.quiet);
  auto session = open_session(resolve_model_dir(common.model), common.backend, common.threads,
                              common.mask_id);
  print_notes(session->notes, common.quiet);
  std::vector<std::string> notes;
  const GenerationSettings settings = resolve_settings(gen, session->config, SettingNames::Options, &notes);

  const auto t_tok = std::chrono::steady_clock::now();
  std::vector<int32_t> prompt_ids =
      encode_prompt(*session, prompt, prompt_options.chat, prompt_options.system);
  const double tokenize_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_tok).count();

  Sampler sampler(prompt_ids, settings, session->config);
  for (const std::string& n : canvas_notes(settings, prompt_ids, session->config)) notes.push_back(n);
  print_notes(notes, common.quiet);
  Engine engine(*session->model);
  engine.reserve(1, static_cast<int32_t>(sampler.canvas().size()), sampler.uses_cfg(),
                 settings.cache != CacheMode::None);
  const auto t0 = std::chrono::steady_clock::now();
  // Not a terminal: --visual falls back to the plain output.
  if (stream) {
    run_streaming(engine, sampler, *session, prompt_options.keep_special);
  } else if (visual && visual_available(STDERR_FILENO)) {
    run_visual(engine, sampler, *session);
  } else {
    engine.run({&sampler});
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!sampler.error().empty()) {
    if (stream) std::cout << std::endl;  // the text printed so far ends its line
    fail_runtime(sampler.error());
  }

  const bool keep = prompt_options.keep_special;
  const std::vector<int32_t> answer = sampler.answer();
  const std::string text = answer_text(*session, sampler, keep);
  RunStats stats;
  stats.prompt_tokens = static_cast<int>(prompt_ids.size());
  stats.generated_tokens = text_length(answer, session->config.stop_token_ids);
  stats.steps = sampler.steps_done();
  stats.forward_passes = sampler.forwards();
  stats.stopped_early = sampler.stopped_early();
  stats.masks_left = sampler.masks_left();
  stats.seconds = seconds;
  stats.load_seconds = session->load_seconds;
  stats.tokenize_seconds = tokenize_seconds;
  stats.flops = engine.stats().flops;
  stats.backend = session->backend->name();
  stats.device = session->backend->device();
  // The CPU backend leaves weights in the file mapping; the CUDA backend counts its own copy.
  stats.peak_memory_bytes = session->backend->peak_bytes() +
                            (session->backend->name() == "cpu" ? session->model->weight_bytes() : 0);
  stats.decoding = decoding_stats_json(sampler);
  stats.full_forward_seconds = engine.stats().full_seconds;
  stats.cached_forward_seconds = engine.stats().cached_seconds;

  print_notes(outcome_notes(*session, sampler, keep), common.quiet);
  if (common.format == "json") {
    nlohmann::json j;
    j["text"] = text;
    j["prompt_ids"] = prompt_ids;
    j["filled_prompt_ids"] = sampler.filled_prompt();
    if (sampler.prompt_masks() > 0) j["filled_prompt"] = filled_prompt_text(*session, sampler, keep);
    j["ids"] = answer;
    j["settings"] = settings_json(settings);
    j["stats"] = stats_json(stats);
    std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else if (stream) {
    std::cout << "\n";
    if (!common.quiet) std::cerr << stats_line(stats) << "\n";
  } else {
    // Infilling: the prompt's holes are part of the answer, so the whole filled text is printed.
    if (sampler.prompt_masks() > 0) std::cout << filled_prompt_text(*session, sampler, keep);
    std::cout << text << "\n";
    if (!common.quiet) std::cerr << stats_line(stats) << "\n";
  }
  finish_stdout();
  return kExitOk;
}

// Parameters one token's forward reads: its embedding row, each layer's norms and attention, the
// dense MLPs, and on MoE layers the router (and expert bias), top_k routed experts and the shared
// expert; then the final norm and the output head (the whole embedding, when tied, counted once).
int64_t active_parameters(const ModelConfig& c) {
  const int64_t d = c.d_model, q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  const MoeConfig& m = c.moe;
  int64_t n = (c.weight_tying ? 0 : d) + c.embedding_size * d + d;  // embedding row, head, final norm
  for (int64_t i = 0; i < c.n_layers; i++) {
    n += 2 * d + d * (q + 2 * kv) + q * d;  // the two norms, q/k/v, output
    if (c.include_qkv_bias) n += q + 2 * kv;
    if (c.qk_norm) n += 2 * c.head_dim;
    if (m.n_experts > 0 && m.layer_is_moe[static_cast<size_t>(i)]) {
      n += m.n_experts * d + (m.has_expert_bias ? m.n_experts : 0);
      n += 3 * d * (m.top_k * m.expert_hidden + m.shared_hidden);
    } else {
      n += 3 * d * c.mlp_hidden;
    }
  }
  return n;
}

// Which layers are dense and which MoE, as ranges: "0: dense, 1-19: MoE".
std::string mlp_layer_pattern(const ModelConfig& c) {
  std::string out;
  for (int64_t i = 0; i < c.n_layers;) {
    const bool moe = c.moe.layer_is_moe[static_cast<size_t>(i)];
    int64_t j = i;
    while (j + 1 < c.n_layers && c.moe.layer_is_moe[static_cast<size_t>(j + 1)] == moe) j++;
    out += (out.empty() ? "" : ", ") + std::to_string(i) + (j > i ? "-" + std::to_string(j) : "") +
           (moe ? ": MoE" : ": dense");
    i = j + 1;
  }
  return out;
}

// How the router chooses and weighs the experts, in words.
std::string router_description(const MoeConfig& m) {
  std::string out = m.sigmoid_scores ? "sigmoid" : "softmax";
  if (m.n_group > 1)
    out += ", group-limited (the best " + std::to_string(m.topk_group) + " of " +
           std::to_string(m.n_group) + " groups by their top-2 sum)";
  if (m.has_expert_bias)
    out += m.bias_in_weights ? ", expert bias added to the scores and weights"
                             : ", expert bias for the choice only";
  out += ", top " + std::to_string(m.top_k);
  out += m.renormalize ? ", weights renormalised" : ", weights not renormalised";
  if (m.routed_scale != 1.0) {
    std::ostringstream scale;
    scale << m.routed_scale;
    out += ", scaled by " + scale.str();
  }
  return out;
}

// A float setting as typed (0.95, not 0.949999988).
double shown_float(float v) { return std::round(static_cast<double>(v) * 1e6) / 1e6; }

int run_info(const CommonOptions& common, bool check_weights) {
  auto session = open_session(resolve_model_dir(common.model), common.backend, common.threads,
                              common.mask_id, /*require_mask=*/false);
  print_notes(session->notes, common.quiet);
  if (check_weights) {
    if (const auto bad = find_non_finite(*session->store))
      fail_input(session->store->source() + ": tensor '" + bad->name + "' holds " +
                 std::to_string(bad->count) + " NaN/Inf value(s) of " + std::to_string(bad->numel) +
                 " (the first at element " + std::to_string(bad->first_index) +
                 "): the weights are damaged; re-download or re-convert the checkpoint");
  }
  const ModelConfig& c = session->config;
  size_t params = 0;
  for (const auto& [name, info] : session->store->tensors()) {
    size_t n = 1;
    for (int64_t d : info.shape) n *= static_cast<size_t>(d);
    params += n;
  }
  nlohmann::ordered_json j;
  j["model_dir"] = session->model_dir;
  j["family"] = c.family;
  j["shifted_logits"] = c.shifted_logits;
  j["default_alg"] = algorithm_name(default_algorithm(c));
  j["d_model"] = c.d_model;
  j["n_layers"] = c.n_layers;
  j["n_heads"] = c.n_heads;
  j["n_kv_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["rotary_dim"] = c.rotary_dim;
  j["qk_norm"] = c.qk_norm;
  j["block_causal"] = c.block_causal;
  j["mlp_hidden_size"] = c.mlp_hidden;
  if (c.moe.n_experts > 0) {
    const MoeConfig& m = c.moe;
    j["experts"] = m.n_experts;
    j["experts_per_token"] = m.top_k;
    j["expert_groups"] = m.n_group;
    j["expert_groups_kept"] = m.topk_group;
    j["expert_hidden_size"] = m.expert_hidden;
    j["shared_expert_hidden_size"] = m.shared_hidden;
    j["router"] = router_description(m);
    j["mlp_layers"] = mlp_layer_pattern(c);
  }
  j["vocab_size"] = c.vocab_size;
  j["embedding_size"] = c.embedding_size;
  j["max_sequence_length"] = c.max_seq_len;
  j["trained_sequence_length"] = c.train_seq_len > 0 ? nlohmann::ordered_json(c.train_seq_len)
                                                     : nlohmann::ordered_json(nullptr);
  {
    // The generation settings a plain run uses on this model.
    const GenerationSettings d = resolve_settings({}, c);
    nlohmann::ordered_json defaults;
    defaults["gen_length"] = d.gen_length;
    defaults["steps"] = d.steps;
    const bool llada2 = d.alg == Algorithm::Llada2;
    defaults["steps_per"] = llada2 ? "block" : "answer";
    defaults["block_length"] = d.alg == Algorithm::Llada || llada2 ? nlohmann::ordered_json(d.block_length)
                                                                   : nlohmann::ordered_json(nullptr);
    defaults["alg"] = algorithm_name(d.alg);
    defaults["threshold"] = d.threshold ? nlohmann::ordered_json(shown_float(*d.threshold))
                                        : nlohmann::ordered_json(nullptr);
    defaults["cache"] = cache_mode_name(d.cache);
    defaults["from"] = c.defaults.gen_length > 0 || c.defaults.steps > 0 || c.defaults.block_length > 0
                           ? "config.json unmask_defaults"
                           : "unmask's defaults";
    j["generation_defaults"] = defaults;
  }
  j["weight_tying"] = c.weight_tying;
  j["parameters"] = params;
  if (c.moe.n_experts > 0) j["active_parameters"] = active_parameters(c);
  j["weight_bytes"] = session->store->total_bytes();
  j["weight_dtype"] = dtype_name(session->weights.embedding.dtype);
  j["tokenizer"] = session->tokenizer->kind();
  j["tokenizer_files"] = session->tokenizer->source();
  j["tokenizer_pieces"] = session->tokenizer->vocab_size();
  j["rope_theta"] = c.rope_theta;
  j["rms_norm_eps"] = c.rms_eps;
  if (c.mask_token_id >= 0) {
    j["mask_token_id"] = c.mask_token_id;
    j["mask_token"] = session->tokenizer->piece(c.mask_token_id);
  } else {
    j["mask_token_id"] = nullptr;
    j["mask_token"] = "none: generation needs --mask-id N (DiffuLLaMA: 811)";
  }
  j["prompt_masks_filled"] = c.infill_prompt_masks;
  j["stop_token_ids"] = c.stop_token_ids;
  nlohmann::ordered_json stop_pieces = nlohmann::ordered_json::array();
  for (int32_t id : c.stop_token_ids) stop_pieces.push_back(session->tokenizer->piece(id));
  j["stop_tokens"] = stop_pieces;
  j["chat_template"] = session->chat.name();
  if (!session->chat.default_system.empty()) j["chat_default_system"] = session->chat.default_system;
  j["backend"] = session->backend->name();
  j["device"] = session->backend->device();
  for (const std::string& line : session->backend->details()) {
    const size_t colon = line.find(": ");
    if (colon != std::string::npos) j[line.substr(0, colon)] = line.substr(colon + 2);
  }
  if (check_weights)
    j["check_weights"] = "ok: every value of the " + std::to_string(session->store->tensors().size()) +
                         " tensors is finite";
  if (common.format == "json") {
    std::cout << j.dump(2) << "\n";
  } else {
    for (const auto& [key, value] : j.items())
      std::cout << key << ": " << (value.is_string() ? value.get<std::string>() : value.dump()) << "\n";
  }
  finish_stdout();
  return kExitOk;
}

int run(int argc, char** argv) {
  CLI::App app{"unmask: run masked-diffusion language models (LLaDA, Dream, llama-format) locally.\n"
               "Text goes to stdout; stats and progress to stderr.",
               "unmask"};
  app.set_version_flag("--version", std::string("unmask ") + UNMASK_VERSION);
  app.require_subcommand(0, 1);
  app.footer("Exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 bad model or input file,\n"
             "4 batch done with failed records, 130 interrupted.\n"
             "Run 'unmask SUBCOMMAND --help' for the options of a subcommand; man unmask for more.");

  CommonOptions common;
  GenerationOptions gen;
  PromptOptions prompt_options;
  std::vector<std::string> prompt;
  bool visual = false;
  bool stream = false, no_stream = false;
  // `unmask [OPTIONS] PROMPT` and `unmask generate [OPTIONS] PROMPT` are the same command.
  CLI::App* generate = app.add_subcommand("generate", "Generate an answer for one prompt (default)");
  for (CLI::App* target : {static_cast<CLI::App*>(&app), generate}) {
    add_common_options(*target, common);
    add_generation_options(*target, gen);
    add_prompt_options(*target, prompt_options);
    target->add_flag("--visual", visual,
                     "Show the canvas filling in on stderr (a terminal only; NO_COLOR: no colour)");
    target->add_flag("--stream", stream,
                     "Print the answer's text on stdout as it becomes final (the committed tokens "
                     "from its start): block by block under --alg llada, later under Dream's loop; "
                     "the default when stdout is a terminal");
    target->add_flag("--no-stream", no_stream, "Print the text only when the whole answer is done");
    target->add_option("prompt", prompt,
                       "Prompt text; several words are joined by spaces; read from stdin when "
                       "absent or '-'");
  }
  BatchOptions batch;
  CLI::App* batch_cmd = add_batch_command(app, batch);
  BenchOptions bench;
  CLI::App* bench_cmd = add_bench_command(app, bench);
  ServeOptions serve;
  CLI::App* serve_cmd = add_serve_command(app, serve);
  CommonOptions info_common;
  bool check_weights = false;
  CLI::App* info = app.add_subcommand("info", "Show model, tokenizer, backend and device facts");
  add_common_options(*info, info_common);
  info->add_flag("--check-weights", check_weights,
                 "Also read every tensor and fail (exit 3) naming the first one that holds NaN or "
                 "Inf");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "unmask: " << e.what() << " (see unmask --help)\n";
    return kExitUsage;
  }
  // note: options typed before a subcommand's name belong to the default command; with a
  // subcommand they would be dropped without a word, so they are refused.
  for (CLI::App* sub : {generate, batch_cmd, bench_cmd, serve_cmd, info}) {
    if (!sub->parsed()) continue;
    for (const CLI::Option* opt : app.get_options()) {
      if (opt->count() == 0) continue;
      if (opt->get_lnames().empty() && opt->get_snames().empty())
        fail_usage("prompt words come before the subcommand '" + sub->get_name() +
                   "'; quote a prompt that starts with a subcommand's name");
      const std::string name = !opt->get_lnames().empty() ? "--" + opt->get_lnames().front()
                                                          : "-" + opt->get_snames().front();
      fail_usage(name + " is given before the subcommand '" + sub->get_name() +
                 "': options go after it (unmask " + sub->get_name() + " " + name + " ...)");
    }
  }
  if (info->parsed()) return run_info(info_common, check_weights);
  if (batch_cmd->parsed()) return run_batch(batch);
  if (bench_cmd->parsed()) return run_bench(bench);
  if (serve_cmd->parsed()) return run_serve(serve);
  return run_generate(common, gen, prompt_options, prompt, visual, stream, no_stream);
}

}  // namespace
}  // namespace unmask

int main(int argc, char** argv) {
  try {
    return unmask::run(argc, argv);
  } catch (const unmask::Error& e) {
    std::cerr << "unmask: " << e.what() << "\n";
    return e.exit_code();
  } catch (const std::bad_alloc&) {
    std::cerr << "unmask: out of memory\n";
    return unmask::kExitRuntime;
  } catch (const std::exception& e) {
    std::cerr << "unmask: " << e.what() << "\n";
    return unmask::kExitRuntime;
  }
}
