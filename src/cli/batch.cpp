// unmask batch: reads every line first, then admits requests into a ragged batch as slots free up.
#include "cli/batch.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>

#include "cli/jsonl.h"
#include "cli/option_checks.h"
#include "cli/output.h"
#include "cli/progress.h"
#include "common.h"
#include "decode/engine.h"
#include "decode/session.h"

namespace unmask {
namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

// note: a signal handler can reach nothing but globals; this flag is the only one, read between
// steps so a record is never half-written because of a signal.
std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal.store(sig); }

// Installs the handlers for the lifetime of a batch run; a second signal kills as usual.
class SignalGuard {
 public:
  SignalGuard() {
    g_signal.store(0);
    struct sigaction sa = {};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~SignalGuard() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ = {}, old_term_ = {};
};

std::string read_input(const std::string& path) {
  if (path == "-")
    return std::string((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  std::error_code ec;
  if (!fs::exists(path, ec)) fail_input(path + ": cannot read the input: no such file");
  if (fs::is_directory(path, ec)) fail_input(path + ": cannot read the input: it is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_input(path + ": cannot read the input (" + std::strerror(errno) + ")");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Appends one record per line and flushes it, so a crash loses at most the record being written.
class RecordWriter {
 public:
  explicit RecordWriter(const std::string& path) : path_(path) {
    file_ = path == "-" ? stdout : std::fopen(path.c_str(), "ab");
    if (!file_) {
      const int err = errno;
      const fs::path parent = fs::path(path).parent_path();
      std::error_code ec;
      std::string why = std::strerror(err);
      if (err == ENOENT && !parent.empty() && !fs::is_directory(parent, ec))
        why = "the directory " + parent.string() + " does not exist";
      fail_input(path + ": cannot open the output for appending: " + why);
    }
  }
  ~RecordWriter() {
    if (file_ && file_ != stdout) std::fclose(file_);
  }
  void write(const ojson& record) {
    // note: text decoded from a random model may hold invalid UTF-8; replace, never throw.
    const std::string line = record.dump(-1, ' ', false, ojson::error_handler_t::replace) + "\n";
    if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)
      fail_runtime(path_ + ": cannot write the output record (disk full?)");
  }

 private:
  std::string path_;
  FILE* file_ = nullptr;
};

// A line ready to run, or the error record it turned into.
struct Work {
  BatchLine line;
  std::vector<int32_t> prompt_ids;
  GenerationSettings settings;
};

struct Running {
  Work* work;
  std::unique_ptr<Sampler> sampler;
  Clock::time_point start;
};

ojson error_record(const BatchLine& line) {
  ojson r;
  r["id"] = line.id;
  r["line"] = line.line;
  r["error"] = line.error;
  return r;
}

// The line's prompt ids: `messages` always through the chat template; `prompt` through it
// under --chat, else as plain text.
std::vector<int32_t> line_prompt_ids(const BatchLine& line, const BatchOptions& o,
                                     const Session& session) {
  if (line.messages.is_null()) return encode_prompt(session, line.prompt, o.prompt.chat, o.prompt.system);
  std::vector<ChatMessage> messages;
  for (const nlohmann::json& m : line.messages)
    messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  return encode_chat(session, std::move(messages), o.prompt.system);
}

// Tokenizes and validates one line; problems become the line's error.
void prepare(Work& w, const BatchOptions& o, const Session& session) {
  if (!w.line.error.empty()) return;
  try {
    w.prompt_ids = line_prompt_ids(w.line, o, session);
    std::vector<std::string> notes;
    w.settings = resolve_settings(apply_overrides(o.gen, w.line.overrides), session.config,
                                  SettingNames::JsonKeys, &notes);
    print_notes(notes, o.common.quiet);
    validate_settings(w.settings, w.prompt_ids.size(), session.config, SettingNames::JsonKeys);
  } catch (const Error& e) {
    w.line.error = e.what();
  }
}

// The output can be created or appended to: checked before the model loads, so a typo in -o
// costs no load (the file itself is opened only when the first record is ready to go).
void check_output_path(const std::string& path) {
  std::error_code ec;
  if (fs::exists(path, ec)) {
    if (::access(path.c_str(), W_OK) != 0)
      fail_usage(path + ": cannot write the output (" + std::strerror(errno) + ")");
    return;
  }
  const fs::path parent = fs::path(path).parent_path().empty() ? fs::path(".") : fs::path(path).parent_path();
  if (!fs::is_directory(parent, ec))
    fail_usage(path + ": cannot create the output: the directory " + parent.string() + " does not exist");
  if (::access(parent.c_str(), W_OK) != 0)
    fail_usage(path + ": cannot create the output in " + parent.string() + " (" + std::strerror(errno) + ")");
}

// An empty file, or one of a few blank lines: nothing a run could lose by appending to it.
bool blank_file(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec || size == 0) return true;
  if (size > 4096) return false;
  std::ifstream in(path, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return is_blank(text) && text.find_first_not_of(" \t\r\n") == std::string::npos;
}

// Whether two paths name one file (links and relative spellings included).
bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  if (fs::exists(a, ec) && fs::exists(b, ec)) return fs::equivalent(a, b, ec);
  return fs::weakly_canonical(a, ec) == fs::weakly_canonical(b, ec);
}

}  // namespace

std::pair<int, int> parse_shard(const std::string& text) {
  const size_t slash = text.find('/');
  int k = -1, n = 0;
  try {
    size_t used_k = 0, used_n = 0;
    if (slash == std::string::npos) throw std::invalid_argument("no slash");
    k = std::stoi(text.substr(0, slash), &used_k);
    n = std::stoi(text.substr(slash + 1), &used_n);
    if (used_k != slash || used_n != text.size() - slash - 1) throw std::invalid_argument("junk");
  } catch (const std::exception&) {
    fail_usage("--shard '" + text + "': expected K/N, e.g. --shard 0/4");
  }
  if (n <= 0 || k < 0 || k >= n)
    fail_usage("--shard " + text + ": need 0 <= K < N (K is 0-based)");
  return {k, n};
}

int default_batch_size(const std::string& backend, int max_canvas) {
  // note: rows in flight drive activation memory ([rows, mlp_hidden] buffers); the CPU gains
  // little past 8 requests because its GEMMs are already compute-bound there.
  const bool cpu = backend == "cpu";
  const int budget = cpu ? 8192 : 16384;
  return std::clamp(budget / std::max(max_canvas, 1), 1, cpu ? 8 : 64);
}

CLI::App* add_batch_command(CLI::App& app, BatchOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "batch", "Run every JSONL line of a file; one JSON result or error record per line");
  cmd->add_option("-i,--input", o.input, "Input JSONL file ('-': stdin)")->required()->check(non_empty());
  cmd->add_option("-o,--output", o.output, "Output JSONL file, appended and flushed per record ('-': stdout)")
      ->required()
      ->check(non_empty());
  add_common_options(*cmd, o.common, {});
  add_generation_options(*cmd, o.gen);
  add_prompt_options(*cmd, o.prompt);
  cmd->add_option("--batch-size", o.batch_size,
                  "Requests run together (0: from canvas size and backend; 8 on the CPU)")
      ->transform(bounded(0, kMaxBatchSize, "each request in flight reserves its canvas' activations"))
      ->capture_default_str();
  cmd->add_flag("--resume", o.resume,
                "Append to an existing output, skipping ids it already holds a result for; lines "
                "whose record is an error run again (their error record is removed), and a torn "
                "last line is dropped");
  cmd->add_flag("--echo-prompt", o.echo_prompt,
                "Copy each line's prompt (or messages) into its result record");
  cmd->add_option("--shard", o.shard,
                  "Only lines whose 0-based index mod N is K, given as K/N (e.g. Slurm job arrays)");
  return cmd;
}

int run_batch(const BatchOptions& o) {
  const auto t_start = Clock::now();
  SignalGuard signals;
  int shard_k = 0, shard_n = 1;
  if (!o.shard.empty()) std::tie(shard_k, shard_n) = parse_shard(o.shard);
  if (o.resume && o.output == "-") fail_usage("--resume needs an output file, not stdout");
  const std::string in_name = o.input == "-" ? "<stdin>" : o.input;

  if (o.input != "-" && o.output != "-" && same_file(o.input, o.output))
    fail_usage("-i and -o name the same file (" + o.output + "); the results would overwrite the input");
  // Every line is parsed before any work, so duplicate ids stop the run with nothing written.
  const std::vector<std::string> lines = split_lines(read_input(o.input));
  const double read_seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
  std::vector<Work> work;
  std::map<std::string, int> seen;  // record_key -> line
  for (size_t i = 0; i < lines.size(); i++) {
    if (is_blank(lines[i])) continue;
    Work w;
    w.line = parse_batch_line(lines[i], static_cast<int>(i + 1));
    const auto [it, fresh] = seen.emplace(record_key(w.line.id, w.line.line), w.line.line);
    if (!fresh && !w.line.id.is_null())
      fail_input(in_name + ": duplicate id " + id_text(w.line.id) + " on lines " +
                 std::to_string(it->second) + " and " + std::to_string(w.line.line));
    if (static_cast<int>(i % shard_n) == shard_k) work.push_back(std::move(w));
  }

  // Never overwrite results: an existing output is either resumed or refused. A device or pipe
  // (/dev/null, /dev/stdout) is written as a stream.
  ExistingOutput existing;
  std::set<std::string> retried;  // ids of error records that this run runs again
  if (o.output != "-") {
    std::error_code ec;
    const bool exists = fs::exists(o.output, ec);
    const bool regular = exists && fs::is_regular_file(o.output, ec);
    if (exists && fs::is_directory(o.output, ec)) fail_usage(o.output + ": is a directory, not an output file");
    if (regular && !o.resume && !blank_file(o.output))
      fail_usage(o.output + " exists and is not empty; use --resume or remove it");
    if (o.resume && exists && !regular)
      fail_usage("--resume needs a regular output file, not " + o.output);
    if (o.resume && regular) {
      existing = read_existing_output(o.output);
      if (existing.torn) {
        fs::resize_file(o.output, existing.good_bytes, ec);
        if (ec) fail_input(o.output + ": cannot truncate its torn last line (" + ec.message() + ")");
        if (!o.common.quiet) std::cerr << "unmask: " << o.output << ": dropped a torn last line\n";
      }
    }
  }
  if (o.output != "-") check_output_path(o.output);
  int skipped = 0;
  std::erase_if(work, [&](const Work& w) {
    const std::string key = record_key(w.line.id, w.line.line);
    auto it = existing.ids.find(key);
    if (it == existing.ids.end()) return false;
    // An error record is retried: its line may have been fixed, or the failure passing.
    if (it->second) {
      retried.insert(key);
      return false;
    }
    skipped++;
    return true;
  });
  if (!retried.empty()) {
    drop_records(o.output, retried);
    if (!o.common.quiet)
      std::cerr << "unmask: " << o.output << ": retrying " << retried.size() << " line(s) that ended in an error\n";
  }

  auto session = open_session(resolve_model_dir(o.common.model), o.common.backend, o.common.threads,
                              o.common.mask_id);
  print_notes(session->notes, o.common.quiet);
  // The command line's own values are checked once, named as options; a line's problems then
  // come from its own keys.
  validate_setting_values(resolve_settings(o.gen, session->config));
  int max_canvas = 1, max_wanted = 1;  // wanted: logits rows a request reads per step
  bool any_cfg = false, any_cache = false;
  int past_trained = 0;  // requests whose canvas is longer than the model was trained on
  const auto t_tokenize = Clock::now();
  for (Work& w : work) {
    prepare(w, o, *session);
    if (!w.line.error.empty()) continue;
    const int canvas = static_cast<int>(canvas_length(w.prompt_ids.size(), w.settings));
    max_canvas = std::max(max_canvas, canvas);
    // The block loop reads one block's masks; Dream's loop every mask of the answer; both also
    // the masks written in the prompt.
    const int prompt_masks = static_cast<int>(
        std::count(w.prompt_ids.begin(), w.prompt_ids.end(), session->config.mask_token_id));
    max_wanted = std::max(max_wanted, prompt_masks + (w.settings.alg == Algorithm::Llada ||
                                                                  w.settings.alg == Algorithm::Llada2
                                                          ? w.settings.block_length
                                                          : w.settings.gen_length));
    any_cfg = any_cfg || w.settings.cfg_scale > 0.f;
    any_cache = any_cache || w.settings.cache != CacheMode::None;
    past_trained += past_trained_length(w.settings, w.prompt_ids.size(), session->config);
  }
  const double tokenize_seconds = std::chrono::duration<double>(Clock::now() - t_tokenize).count();
  if (past_trained > 0)
    print_notes({std::to_string(past_trained) + " of " + std::to_string(work.size()) +
                 " requests have a canvas (prompt + gen-length) longer than the " +
                 std::to_string(session->config.train_seq_len) +
                 " positions this model was trained on (unmask_train_seq_len); expect lower quality past them"},
                o.common.quiet);
  const int batch = o.batch_size > 0 ? o.batch_size : default_batch_size(session->backend->name(), max_canvas);
  const int seqs = batch * (any_cfg ? 2 : 1);
  session->model->reserve(seqs * max_canvas, seqs * max_wanted, seqs);

  RecordWriter writer(o.output);
  Engine engine(*session->model);
  if (any_cache) engine.reserve(batch, max_canvas, any_cfg, true);
  Progress progress(stderr,
                    o.common.quiet ? Progress::Mode::None
                                   : (isatty(STDERR_FILENO) ? Progress::Mode::Bar : Progress::Mode::Lines),
                    static_cast<int>(work.size()));
  const auto t0 = Clock::now();
  int written = 0, failed = 0, ended_at_once = 0, left_masks = 0;
  long long tokens = 0;
  const std::vector<int32_t>& stops = session->config.stop_token_ids;
  size_t next = 0;
  std::vector<Running> running;
  std::vector<Sampler*> active;
  bool interrupted = false;
  for (;;) {
    if (g_signal.load() != 0) {
      interrupted = true;
      break;
    }
    // Continuous batching: freed slots take the next lines before the next step.
    while (static_cast<int>(running.size()) < batch && next < work.size()) {
      Work& w = work[next++];
      if (!w.line.error.empty()) {
        writer.write(error_record(w.line));
        written++;
        failed++;
        continue;
      }
      running.push_back({&w, std::make_unique<Sampler>(w.prompt_ids, w.settings, session->config),
                         Clock::now()});
    }
    if (running.empty()) break;
    active.clear();
    for (Running& r : running) active.push_back(r.sampler.get());
    engine.step(active);
    for (size_t i = 0; i < running.size();) {
      Running& r = running[i];
      if (!r.sampler->done()) {
        i++;
        continue;
      }
      const Sampler& s = *r.sampler;
      if (!s.error().empty()) {
        r.work->line.error = s.error();
        writer.write(error_record(r.work->line));
        written++;
        failed++;
        running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
        continue;
      }
      const std::vector<int32_t> answer = s.answer();
      const int generated = text_length(answer, session->config.stop_token_ids);
      const double seconds = std::chrono::duration<double>(Clock::now() - r.start).count();
      ojson rec;
      rec["id"] = r.work->line.id;
      rec["line"] = r.work->line.line;
      if (o.echo_prompt) {
        if (r.work->line.messages.is_null()) rec["prompt"] = r.work->line.prompt;
        else rec["messages"] = r.work->line.messages;
      }
      rec["text"] = answer_text(*session, s, o.prompt.keep_special);
      rec["ids"] = answer;
      rec["prompt_tokens"] = r.work->prompt_ids.size();
      rec["filled_prompt_ids"] = s.filled_prompt();
      if (s.prompt_masks() > 0) rec["filled_prompt"] = filled_prompt_text(*session, s, o.prompt.keep_special);
      rec["settings"] = settings_json(s.settings());
      ended_at_once += generated == 0 && s.answer().size() > 0 &&
                       std::find(stops.begin(), stops.end(), s.answer()[0]) != stops.end();
      left_masks += s.masks_left() > 0;
      rec["stats"] = {{"generated_tokens", generated},
                      {"steps", s.steps_done()},
                      {"forward_passes", s.forwards()},
                      {"stopped_early", s.stopped_early()},
                      {"seconds", seconds},
                      {"tokens_per_second", seconds > 0 ? generated / seconds : 0.0},
                      {"masks_left", s.masks_left()}};
      const nlohmann::ordered_json decoding = decoding_stats_json(s);
      for (const auto& [key, value] : decoding.items()) rec["stats"][key] = value;
      writer.write(rec);
      written++;
      tokens += generated;
      running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
    }
    progress.update(written, tokens);
  }
  progress.finish();
  std::vector<std::string> outcome;
  if (ended_at_once > 0)
    outcome.push_back(std::to_string(ended_at_once) + " request(s) ended at once: the model chose the "
                      "end-of-text token first (their text is empty)");
  if (left_masks > 0 && session->config.block_causal)
    outcome.push_back(std::to_string(left_masks) + " request(s) left mask tokens in their answer (see "
                      "masks_left): LLaDA2's loop takes the argmax over the whole vocabulary, the mask "
                      "included, as its generate() does");
  else if (left_masks > 0)
    outcome.push_back(std::to_string(left_masks) + " request(s) left mask tokens unfilled (see masks_left): "
                      "LLaDA's block schedule commits as many tokens as the answer's blocks hold, so masks "
                      "written in the prompt leave as many behind; --threshold or --factor with more "
                      "--steps than answer tokens fill them");
  print_notes(outcome, o.common.quiet);

  const double generate_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  const double wall = std::chrono::duration<double>(Clock::now() - t_start).count();
  if (!o.common.quiet) {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "batch: %d requests (%d ok, %d failed), %lld tokens in %.2f s of generation "
                  "(%.1f tok/s); wall %.2f s = read %.2f + load %.2f + tokenize %.2f + generate "
                  "%.2f s",
                  written, written - failed, failed, tokens, generate_seconds,
                  generate_seconds > 0 ? tokens / generate_seconds : 0.0, wall, read_seconds,
                  session->load_seconds, tokenize_seconds, generate_seconds);
    std::cerr << buf;
    if (skipped > 0) std::cerr << "; " << skipped << " already in " << o.output;
    std::cerr << "\n";
  }
  if (interrupted) {
    std::cerr << "unmask: interrupted; " << written << " records written, "
              << work.size() - static_cast<size_t>(written) << " left: rerun with --resume\n";
    return kExitInterrupted;
  }
  return failed > 0 ? kExitBatchFailed : kExitOk;
}

}  // namespace unmask
