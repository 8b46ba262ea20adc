// unmask bench: the settings matrix, warm-up and timed runs, the GEMM baseline and the reports.
#include "cli/bench.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/option_checks.h"
#include "cli/output.h"
#include "common.h"
#include "decode/engine.h"
#include "decode/session.h"
#include "model/cpu_backend.h"
#include "model/synthetic.h"
#include "tokenizer/unicode.h"

#ifndef UNMASK_GIT_COMMIT
#define UNMASK_GIT_COMMIT "unknown"
#endif

namespace unmask {
namespace {

using ojson = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

constexpr int kDefaultRandomPromptLength = 16;

// The prompts of every run: random ids (synthetic models, which have no tokenizer) or text
// prompts tokenized once, cycled over the requests of a row's runs.
struct BenchPrompts {
  std::string description;  // "random ids (16 tokens)", "built-in verse openings (8)", "FILE (N lines)"
  ojson report;             // the same for JSON
  int random_length = 0;    // > 0: random ids of this length (no tokenizer)
  std::vector<std::string> texts;
  std::vector<int> lines;   // each text's 1-based line in --prompts FILE
  std::vector<std::vector<int32_t>> ids;  // tokenized texts

  size_t count() const { return random_length > 0 ? 0 : ids.size(); }
  size_t longest() const {
    size_t n = static_cast<size_t>(random_length);
    for (const auto& p : ids) n = std::max(n, p.size());
    return n;
  }
  // Request `i` of run `run` of a row with `batch` requests.
  std::vector<int32_t> prompt(const ModelConfig& config, int run, int batch, int i) const {
    if (random_length > 0) return random_prompt(config, random_length, 1000 + i);
    const size_t k = static_cast<size_t>(run) * static_cast<size_t>(batch) + static_cast<size_t>(i);
    return ids[k % ids.size()];
  }
};

struct BenchCase {
  GenerationSettings settings;
  int batch_size = 1;
};

struct BenchResult {
  BenchCase bench_case;
  int runs = 0;
  double generated_tokens = 0;    // counted per timed run (mean over the runs)
  double prompt_tokens = 0;       // per request (mean over the timed runs' requests)
  double forward_passes = 0;      // batched forwards per run (mean over the timed runs)
  double sequence_forwards = 0;   // per-request evaluations per run (a CFG step counts two)
  double wall_seconds = 0;        // median over runs
  double tokens_per_second = 0;   // median over runs
  double tokens_per_second_min = 0, tokens_per_second_max = 0;  // slowest and fastest run
  double steps_per_second = 0;    // median over runs
  double ms_median = 0, ms_p90 = 0;  // over every forward of every timed run
  double gflops = 0;              // FLOPs / forward time over the timed runs
  size_t peak_bytes = 0;
  size_t peak_rss_bytes = 0;      // the process's peak resident set (0: unknown)
  bool peak_rss_per_row = false;  // it restarted at the row's start (else: since the process began)
  int64_t n_layers = 0;           // the model's layers, for ms per layer
  std::optional<double> baseline_gflops;
  std::optional<double> copy_gbps;  // backend copy bandwidth, bytes read + written per second
  size_t weight_bytes = 0;
  int64_t replayed_steps = 0;     // forwards whose layers replayed a recorded step (CUDA graphs)
};

std::string hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

// The model under test: a loaded session or a synthetic model over its own backend.
struct Subject {
  std::unique_ptr<Session> session;
  std::unique_ptr<Backend> backend;  // synthetic only
  std::unique_ptr<SyntheticModel> synthetic;
  std::string name;
  DType dtype = DType::F32;

  Model& model() { return synthetic ? synthetic->model() : *session->model; }
  Backend& be() { return synthetic ? *backend : *session->backend; }
  bool is_synthetic() const { return synthetic != nullptr; }
  // Weights live in the backend's own memory except on the CPU with a mapped file.
  size_t peak_bytes() {
    const bool mapped = !is_synthetic() && be().name() == "cpu";
    return be().peak_bytes() + (mapped ? model().weight_bytes() : 0);
  }
};

// The --synthetic shape, cut to --layers when given.
SyntheticSpec bench_spec(const BenchOptions& o) {
  SyntheticSpec spec = synthetic_spec(o.synthetic);
  if (o.layers) keep_layers(spec, *o.layers);
  return spec;
}

// The process's peak resident set (VmHWM of /proc/self/status) in bytes; 0 when unknown.
size_t peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) != 0) continue;
    return static_cast<size_t>(std::strtoull(line.c_str() + 6, nullptr, 10)) * 1024;  // "N kB"
  }
  return 0;
}

// Restarts the peak resident set from the current one (Linux 4.0+: "5" to /proc/self/clear_refs,
// which touches nothing else); false where the kernel does not allow it.
bool reset_peak_rss() {
  const int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = write(fd, "5", 1) == 1;
  close(fd);
  return ok;
}

Subject open_subject(const BenchOptions& o) {
  Subject s;
  if (!o.synthetic.empty()) {
    const SyntheticSpec spec = bench_spec(o);
    s.backend = make_backend(o.common.backend, o.common.threads);
    if (const double bytes = synthetic_weight_bytes(spec); bytes > 1e9 && !o.common.quiet)
      std::cerr << "unmask: building random weights of " << spec.name << "'s shape ("
                << static_cast<int64_t>(bytes / 1e8) / 10.0 << " GB)...\n";
    s.synthetic = std::make_unique<SyntheticModel>(*s.backend, spec);
    s.name = "synthetic:" + spec.name;
    if (spec.config.n_layers < spec.shape_layers)
      s.name += " (first " + std::to_string(spec.config.n_layers) + " of " +
                std::to_string(spec.shape_layers) + " layers)";
    s.dtype = spec.dtype;
  } else {
    s.session = open_session(resolve_model_dir(o.common.model), o.common.backend, o.common.threads);
    s.name = s.session->model_dir;
    s.dtype = s.session->weights.embedding.dtype;
  }
  return s;
}

// --prompts FILE: one prompt a line, UTF-8 (a byte-order mark before line 1 and a CR before each
// line end are dropped); blank lines (empty or only spaces and tabs) are skipped. fail_input names
// the file, and the line for a line that is not text.
BenchPrompts read_prompt_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string what = "--prompts " + path + ": cannot read it";
  if (!fs::exists(path, ec)) fail_input(what + ": no such file");
  if (fs::is_directory(path, ec)) fail_input(what + ": it is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_input(what + " (" + std::strerror(errno) + ")");
  BenchPrompts p;
  std::string line;
  for (int n = 1; std::getline(in, line); n++) {
    if (n == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const std::string where = path + ":" + std::to_string(n) + ": ";
    if (line.find('\0') != std::string::npos) fail_input(where + "holds a NUL byte: not a text line");
    if (!unicode::is_valid_utf8(line)) fail_input(where + "not valid UTF-8");
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    p.texts.push_back(line);
    p.lines.push_back(n);
  }
  if (in.bad()) fail_input(what + " (" + std::strerror(errno) + ")");
  if (p.texts.empty()) fail_input("--prompts " + path + ": no prompts: every line is blank");
  p.description = path + " (" + std::to_string(p.texts.size()) + " lines)";
  p.report = {{"source", "file"}, {"file", path}};
  return p;
}

// Tokenizes the text prompts as generate does a plain prompt, and checks that each fits the
// model's length with the longest gen-length: the error names the file and line.
void tokenize_prompts(BenchPrompts& p, const Session& session, const BenchOptions& o,
                      bool from_file, const std::string& file) {
  int longest_gen = resolve_settings({}, session.config).gen_length;
  if (!o.gen_lengths.empty()) longest_gen = *std::max_element(o.gen_lengths.begin(), o.gen_lengths.end());
  for (size_t i = 0; i < p.texts.size(); i++) {
    const std::string where = from_file ? file + ":" + std::to_string(p.lines[i])
                                        : "built-in verse opening " + std::to_string(i + 1);
    auto fail = [&](const std::string& why) {
      if (from_file) fail_input(where + ": " + why);
      fail_usage(where + ": " + why);
    };
    std::vector<int32_t> ids;
    try {
      ids = encode_prompt(session, p.texts[i], false, std::nullopt);
    } catch (const Error& e) {
      fail(e.what());
    }
    if (ids.empty()) fail("the prompt has no tokens");
    const size_t canvas = ids.size() + static_cast<size_t>(longest_gen);
    if (canvas > static_cast<size_t>(session.config.max_seq_len))
      fail("the prompt's " + std::to_string(ids.size()) + " tokens + gen-length " +
           std::to_string(longest_gen) + " exceed the model's max_sequence_length " +
           std::to_string(session.config.max_seq_len) + "; shorten the prompt or --gen-length");
    p.ids.push_back(std::move(ids));
  }
  size_t shortest = p.ids.front().size();
  for (const auto& ids : p.ids) shortest = std::min(shortest, ids.size());
  p.report["count"] = p.ids.size();
  p.report["min_tokens"] = shortest;
  p.report["max_tokens"] = p.longest();
}

std::vector<BenchCase> make_cases(const BenchOptions& o, const ModelConfig& config, bool synthetic,
                                  size_t prompt_tokens) {
  std::vector<int> gen_lengths = o.gen_lengths;
  if (gen_lengths.empty()) gen_lengths.push_back(resolve_settings({}, config).gen_length);
  std::vector<BenchCase> cases;
  for (int gen : gen_lengths) {
    for (int batch : o.batch_sizes) {
      const std::vector<std::optional<int>> steps =
          o.steps.empty() ? std::vector<std::optional<int>>{std::nullopt}
                          : std::vector<std::optional<int>>(o.steps.begin(), o.steps.end());
      const std::vector<std::optional<int>> blocks =
          o.block_lengths.empty()
              ? std::vector<std::optional<int>>{std::nullopt}
              : std::vector<std::optional<int>>(o.block_lengths.begin(), o.block_lengths.end());
      // An empty mode is the loop's own: block for LLaDA2's loop, else none.
      const std::vector<std::string> caches =
          o.caches.empty() ? std::vector<std::string>{""} : o.caches;
      for (const auto& st : steps) {
        for (const auto& bl : blocks) {
         for (const std::string& cache : caches) {
          GenerationOptions g;
          g.cache = cache;
          g.factor = o.factor;
          g.gen_length = gen;
          g.steps = st;
          g.block_length = bl;
          g.cfg_scale = o.cfg_scale;
          g.threshold = o.threshold;
          g.alg = o.alg;
          // Synthetic weights may commit EOS anywhere: run every step so all shapes are timed.
          g.eos_stop = !synthetic;
          BenchCase c;
          std::vector<std::string> notes;
          c.settings = resolve_settings(g, config, SettingNames::Options, &notes);
          // LLaDA2.0's loop stops after any block holding EOS, whatever --eos-stop says: random
          // weights never pick EOS, so every block of every row is timed.
          if (synthetic && c.settings.alg == Algorithm::Llada2) c.settings.no_eos = true;
          if (past_trained_length(c.settings, prompt_tokens, config))
            notes.push_back("gen-length " + std::to_string(c.settings.gen_length) + " with a " +
                            std::to_string(prompt_tokens) + "-token prompt is longer than the " +
                            std::to_string(config.train_seq_len) +
                            " positions this model was trained on (unmask_train_seq_len)");
          print_notes(notes, o.common.quiet || synthetic);
          c.batch_size = batch;
          validate_settings(c.settings, prompt_tokens, config);
          cases.push_back(c);
         }
        }
      }
    }
  }
  return cases;
}

// One run of `c`: batch_size requests started together, run to completion.
struct RunOutcome {
  double seconds = 0;
  int64_t generated_tokens = 0;
  int64_t prompt_tokens = 0;
  EngineStats stats;
};

RunOutcome run_once(Subject& subject, const BenchCase& c, const BenchPrompts& prompts, int run) {
  Model& model = subject.model();
  const ModelConfig& config = model.config();
  std::vector<std::unique_ptr<Sampler>> owned;
  std::vector<Sampler*> samplers;
  for (int i = 0; i < c.batch_size; i++) {
    GenerationSettings s = c.settings;
    s.seed = static_cast<uint64_t>(i);
    owned.push_back(std::make_unique<Sampler>(prompts.prompt(config, run, c.batch_size, i), s, config));
    samplers.push_back(owned.back().get());
  }
  Engine engine(model);
  const auto t0 = Clock::now();
  engine.run(samplers);
  model.backend().synchronize();
  RunOutcome r;
  for (const Sampler* s : samplers) r.prompt_tokens += s->prompt_length();
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  for (Sampler* s : samplers) {
    if (!s->error().empty()) fail_runtime("bench: " + s->error());
    // Synthetic models have no real EOS: every generated position counts.
    r.generated_tokens += subject.is_synthetic() ? s->settings().gen_length
                                                 : text_length(s->answer(), config.stop_token_ids);
  }
  r.stats = engine.stats();
  return r;
}

// Mean seconds of one call of `op` on `be`, after one untimed call (first touch, lazy setup):
// at least 3 calls and 0.3 s.
template <class Op>
double seconds_per_call(Backend& be, Op op) {
  op();
  be.synchronize();
  int calls = 0;
  double seconds = 0;
  const auto t0 = Clock::now();
  while (calls < 3 || seconds < 0.3) {
    op();
    be.synchronize();
    calls++;
    seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  }
  return seconds / calls;
}

// The backend's matmul on the model's largest weight shape [mlp_hidden, d_model] with the case's
// canvas rows: the same code path as the forward's GEMMs, without everything around them.
double baseline_gflops(Subject& subject, int64_t rows) {
  Backend& be = subject.be();
  const ModelConfig& c = subject.model().config();
  // A model whose every layer is MoE may have no dense width: an expert's then.
  const int64_t hidden = c.mlp_hidden > 0 ? c.mlp_hidden : std::max<int64_t>(c.moe.expert_hidden, 1);
  Tensor w = be.random_weight(hidden, c.d_model, subject.dtype, 0xBA5E, 0.02f);
  Tensor x = be.random_weight(rows, c.d_model, DType::F32, 0xBA5F, 1.f);
  Tensor out;
  out.rows = rows;
  out.cols = hidden;
  out.data = be.alloc(out.n_bytes());
  const double seconds = seconds_per_call(be, [&] { be.matmul(x, w, nullptr, out); });
  be.free(out.data);
  be.free(x.data);
  be.free(w.data);
  return 2.0 * static_cast<double>(rows) * c.d_model * hidden / seconds / 1e9;
}

// A copy of 256 MiB inside backend memory: the bandwidth ceiling for reading the weights.
double copy_gbps(Subject& subject) {
  Backend& be = subject.be();
  const size_t bytes = size_t{256} << 20;
  void* src = be.alloc(bytes);
  void* dst = be.alloc(bytes);
  const double seconds = seconds_per_call(be, [&] { be.copy(dst, src, bytes); });
  be.free(dst);
  be.free(src);
  return 2.0 * static_cast<double>(bytes) / seconds / 1e9;
}

BenchResult run_case(Subject& subject, const BenchCase& c, const BenchOptions& o,
                     const BenchPrompts& prompts) {
  const GenerationSettings& s = c.settings;
  // LLaDA2's canvas ends on a block boundary past the answer.
  const int32_t canvas = static_cast<int32_t>(canvas_length(prompts.longest(), s));
  const int32_t seqs = c.batch_size * (s.cfg_scale > 0.f ? 2 : 1);
  // Dream's loop reads every masked position of the answer, the block loops those of one block.
  const bool blocks = s.alg == Algorithm::Llada || s.alg == Algorithm::Llada2;
  const int32_t wanted = blocks ? s.block_length : s.gen_length;
  // The row's peak memory is its own: the buffers an earlier row grew (a larger batch or canvas,
  // a KV cache, backend scratch) are freed and the high-water mark restarts from what is live
  // now (the weights), so neither a larger row nor --baseline's buffers leak into later rows.
  subject.model().release_buffers();
  subject.be().release_scratch();
  subject.be().reset_peak();
  const bool rss_reset = reset_peak_rss();
  subject.model().reserve(seqs * canvas, seqs * wanted, seqs);
  for (int i = 0; i < o.warmup; i++) run_once(subject, c, prompts, i);

  BenchResult r;
  r.bench_case = c;
  const int64_t replays_before = subject.model().backend().replayed_steps();
  std::vector<double> walls, tok_s, steps_s, forward_ms;
  double flops = 0, forward_seconds = 0;
  int64_t tokens = 0, prompt_tokens = 0, forwards = 0, sequence_forwards = 0;
  for (int i = 0; i < o.repeat; i++) {
    const RunOutcome run = run_once(subject, c, prompts, i);
    prompt_tokens += run.prompt_tokens;
    walls.push_back(run.seconds);
    tok_s.push_back(run.seconds > 0 ? run.generated_tokens / run.seconds : 0);
    steps_s.push_back(run.seconds > 0 ? run.stats.forward_calls / run.seconds : 0);
    forward_ms.insert(forward_ms.end(), run.stats.forward_ms.begin(), run.stats.forward_ms.end());
    flops += run.stats.flops;
    forward_seconds += run.stats.forward_seconds;
    tokens += run.generated_tokens;
    forwards += run.stats.forward_calls;
    sequence_forwards += run.stats.sequence_forwards;
  }
  r.runs = o.repeat;
  r.replayed_steps = subject.model().backend().replayed_steps() - replays_before;
  r.wall_seconds = percentile(walls, 0.5);
  r.generated_tokens = static_cast<double>(tokens) / o.repeat;
  r.forward_passes = static_cast<double>(forwards) / o.repeat;
  r.sequence_forwards = static_cast<double>(sequence_forwards) / o.repeat;
  r.prompt_tokens = static_cast<double>(prompt_tokens) / (o.repeat * c.batch_size);
  r.tokens_per_second = percentile(tok_s, 0.5);
  r.tokens_per_second_min = *std::min_element(tok_s.begin(), tok_s.end());
  r.tokens_per_second_max = *std::max_element(tok_s.begin(), tok_s.end());
  r.steps_per_second = percentile(steps_s, 0.5);
  r.ms_median = percentile(forward_ms, 0.5);
  r.ms_p90 = percentile(forward_ms, 0.9);
  r.gflops = forward_seconds > 0 ? flops / forward_seconds / 1e9 : 0;
  r.peak_bytes = subject.peak_bytes();
  r.peak_rss_bytes = peak_rss_bytes();
  r.peak_rss_per_row = rss_reset;
  r.n_layers = subject.model().config().n_layers;
  r.weight_bytes = subject.model().weight_bytes();
  if (o.baseline) {
    r.baseline_gflops = baseline_gflops(subject, static_cast<int64_t>(seqs) * canvas);
    r.copy_gbps = copy_gbps(subject);
  }
  return r;
}

// A count that may be a mean: an integer when it is one.
ojson count_json(double v) {
  return v == std::floor(v) ? ojson(static_cast<int64_t>(v)) : ojson(v);
}

ojson result_json(const BenchResult& r) {
  const GenerationSettings& s = r.bench_case.settings;
  ojson j;
  j["gen_length"] = s.gen_length;
  j["batch_size"] = r.bench_case.batch_size;
  j["steps"] = s.steps;
  j["block_length"] = s.block_length;
  j["alg"] = algorithm_name(s.alg);
  j["prompt_length"] = count_json(r.prompt_tokens);
  j["cfg_scale"] = s.cfg_scale;
  j["threshold"] = s.threshold ? ojson(*s.threshold) : ojson(nullptr);
  j["factor"] = s.factor ? ojson(*s.factor) : ojson(nullptr);
  j["cache"] = cache_mode_name(s.cache);
  j["runs"] = r.runs;
  j["generated_tokens"] = count_json(r.generated_tokens);
  j["wall_seconds"] = r.wall_seconds;
  j["tokens_per_second"] = r.tokens_per_second;
  j["tokens_per_second_min"] = r.tokens_per_second_min;
  j["tokens_per_second_max"] = r.tokens_per_second_max;
  j["ms_per_token"] = r.tokens_per_second > 0 ? ojson(1e3 / r.tokens_per_second) : ojson(nullptr);
  j["speedup"] = nullptr;  // set once the first row is known
  j["steps_per_second"] = r.steps_per_second;
  j["forward_passes"] = count_json(r.forward_passes);
  j["sequence_forwards"] = count_json(r.sequence_forwards);
  j["replayed_steps"] = r.replayed_steps;
  j["ms_per_forward_median"] = r.ms_median;
  j["ms_per_forward_p90"] = r.ms_p90;
  // Every layer's share of a median forward (the embedding and the output head included).
  j["ms_per_layer"] = r.n_layers > 0 ? ojson(r.ms_median / static_cast<double>(r.n_layers)) : ojson(nullptr);
  j["gflops_per_second"] = r.gflops;
  j["peak_memory_bytes"] = r.peak_bytes;
  j["peak_rss_bytes"] = r.peak_rss_bytes > 0 ? ojson(r.peak_rss_bytes) : ojson(nullptr);
  j["peak_rss_per_row"] = r.peak_rss_per_row;
  j["baseline_gflops_per_second"] = r.baseline_gflops ? ojson(*r.baseline_gflops) : ojson(nullptr);
  j["baseline_fraction"] = r.baseline_gflops && *r.baseline_gflops > 0
                               ? ojson(r.gflops / *r.baseline_gflops)
                               : ojson(nullptr);
  j["weight_bytes"] = r.weight_bytes;
  j["copy_gbytes_per_second"] = r.copy_gbps ? ojson(*r.copy_gbps) : ojson(nullptr);
  // Time to read every weight once at the copy's memory traffic rate, and the median forward
  // against it (a memory-bound forward cannot beat 1).
  const double read_ms = r.copy_gbps && *r.copy_gbps > 0
                             ? static_cast<double>(r.weight_bytes) / (*r.copy_gbps * 1e9) * 1e3
                             : 0.0;
  j["weight_read_ms"] = read_ms > 0 ? ojson(read_ms) : ojson(nullptr);
  j["forward_over_weight_read"] = read_ms > 0 ? ojson(r.ms_median / read_ms) : ojson(nullptr);
  return j;
}

std::string csv_field(const ojson& v) {
  if (v.is_null()) return "";
  if (!v.is_string()) return v.dump();
  std::string out = "\"";
  for (char ch : v.get<std::string>()) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return out + "\"";
}

// Whether stdout continues a file that already holds data, so CSV rows appended to it must come
// without a second header: a regular file whose size is above 0 and that is open for appending
// (O_APPEND, as the shell's >> opens it) or positioned past its start (offset > 0, as when an
// earlier command of the same > redirection wrote to it). A terminal, a pipe, or a file that >
// has just emptied is not one. Checked before anything is written (stderr may be the same file).
bool stdout_continues_a_file() {
  struct stat st {};
  if (fstat(STDOUT_FILENO, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) return false;
  const int flags = fcntl(STDOUT_FILENO, F_GETFL);
  if (flags != -1 && (flags & O_APPEND)) return true;
  return lseek(STDOUT_FILENO, 0, SEEK_CUR) > 0;
}

void print_csv(const ojson& report, bool header) {
  const ojson& m = report["machine"];
  const ojson prefix = {{"hostname", m["hostname"]}, {"cpu", m["cpu"]}, {"cores", m["cores"]},
                        {"backend", report["backend"]}, {"device", report["device"]},
                        {"git_commit", report["git_commit"]}, {"model", report["model"]["name"]},
                        {"prompts", report["prompts"]["description"]}};
  for (const ojson& r : report["results"]) {
    ojson row = prefix;
    for (const auto& [key, value] : r.items()) row[key] = value;
    std::string line;
    if (header) {
      for (const auto& [key, value] : row.items()) line += (line.empty() ? "" : ",") + key;
      std::cout << line << "\n";
      line.clear();
      header = false;
    }
    for (const auto& [key, value] : row.items()) line += (line.empty() ? "" : ",") + csv_field(value);
    std::cout << line << "\n";
  }
}

// "-" for a value that could not be computed (no token counted in the first row, say).
std::string fixed(const ojson& v, int decimals) {
  if (v.is_null()) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v.get<double>());
  return buf;
}

// A count_json value: as an integer, or with one decimal when it is a mean between integers.
std::string count_text(const ojson& v) { return fixed(v, v.is_number_integer() ? 0 : 1); }

// The text table's columns: heading, width and the legend line printed under the table.
struct TableColumn {
  const char* heading;
  int width;
  const char* meaning;
};

const TableColumn kTableColumns[] = {
    {"cache", 6, "KV cache mode: none, prefix, dual or block"},
    {"gen", 7, "gen-length: answer positions per request"},
    {"batch", 6, "requests run together"},
    {"steps", 6, "sampling steps"},
    {"block", 6, "block length in positions"},
    {"tokens", 8,
     "answer tokens per run, all requests, each up to its first stop token (synthetic: every "
     "position); mean of the timed runs"},
    {"tok/s", 10, "tokens per second of a run's wall time, median over the timed runs"},
    {"tok/s min-max", 15, "the slowest and the fastest timed run's tok/s (the spread across repeats)"},
    {"ms/tok", 8, "milliseconds per counted token: 1000 / tok/s"},
    {"speed-up", 8, "tok/s over the first row's tok/s (- when the first row counted no token)"},
    {"steps/s", 8, "forward passes per second of wall time, median over the timed runs"},
    {"ms/fwd", 9, "milliseconds per forward pass, median over every forward of the timed runs"},
    {"p90 ms", 9, "milliseconds per forward pass, 90th percentile"},
    {"ms/layer", 9,
     "ms/fwd over the model's layers: each layer's share of a forward (the embedding and the output "
     "head included)"},
    {"fwd", 7, "forward passes per run (one pass serves the whole batch); mean of the timed runs"},
    {"GFLOP/s", 9, "billions of floating-point operations per second of forward time"},
    {"peak MiB", 9,
     "the row's own peak memory in MiB (2^20 bytes): backend buffers and weights (mapped ones too)"},
    {"RSS MiB", 9,
     "the process's peak resident set in MiB (VmHWM: host memory only, weights included), "
     "restarted at each row where the kernel allows, else since the start"},
};
const TableColumn kBaselineColumns[] = {
    {"GEMM GF/s", 9, "GFLOP/s of the backend's matmul alone on the largest weight shape"},
    {"frac", 6, "GFLOP/s / GEMM GF/s"},
    {"copy GB/s", 9, "GB/s (10^9 bytes read + written) of a 256 MiB copy in backend memory"},
    {"fwd/read", 8, "ms/fwd over the time to read every weight once at copy GB/s"},
};

void print_table(const ojson& report) {
  std::printf("unmask bench: %s on %s (%s), commit %s\n",
              report["model"]["name"].get<std::string>().c_str(),
              report["backend"].get<std::string>().c_str(),
              report["device"].get<std::string>().c_str(),
              report["git_commit"].get<std::string>().c_str());
  for (const auto& line : report["backend_details"])
    std::printf("%s\n", line.get<std::string>().c_str());
  std::printf("prompts: %s\n", report["prompts"]["description"].get<std::string>().c_str());
  const bool baseline = !report["results"].empty() &&
                        !report["results"][0]["baseline_gflops_per_second"].is_null();
  std::vector<TableColumn> columns(std::begin(kTableColumns), std::end(kTableColumns));
  if (baseline) columns.insert(columns.end(), std::begin(kBaselineColumns), std::end(kBaselineColumns));
  auto print_row = [&](const std::vector<std::string>& cells) {
    std::string line;
    for (size_t i = 0; i < columns.size(); i++) {
      const std::string& cell = cells.at(i);
      line += (i > 0 ? " " : "") +
              std::string(std::max<size_t>(columns[i].width, cell.size()) - cell.size(), ' ') + cell;
    }
    std::printf("%s\n", line.c_str());
  };
  std::vector<std::string> headings;
  for (const TableColumn& c : columns) headings.push_back(c.heading);
  print_row(headings);
  for (const ojson& r : report["results"]) {
    std::vector<std::string> cells = {
        r["cache"].get<std::string>(),
        std::to_string(r["gen_length"].get<int>()),
        std::to_string(r["batch_size"].get<int>()),
        std::to_string(r["steps"].get<int>()),
        std::to_string(r["block_length"].get<int>()),
        count_text(r["generated_tokens"]),
        fixed(r["tokens_per_second"], 1),
        fixed(r["tokens_per_second_min"], 1) + "-" + fixed(r["tokens_per_second_max"], 1),
        fixed(r["ms_per_token"], 2),
        r["speedup"].is_null() ? "-" : fixed(r["speedup"], 2) + "x",
        fixed(r["steps_per_second"], 2),
        fixed(r["ms_per_forward_median"], 2),
        fixed(r["ms_per_forward_p90"], 2),
        fixed(r["ms_per_layer"], 2),
        count_text(r["forward_passes"]),
        fixed(r["gflops_per_second"], 2),
        fixed(r["peak_memory_bytes"].get<double>() / (1024.0 * 1024.0), 1),
        r["peak_rss_bytes"].is_null() ? "-" : fixed(r["peak_rss_bytes"].get<double>() / (1024.0 * 1024.0), 1),
    };
    if (baseline) {
      for (const char* key : {"baseline_gflops_per_second", "baseline_fraction",
                              "copy_gbytes_per_second", "forward_over_weight_read"})
        cells.push_back(fixed(r[key], std::string(key) == "copy_gbytes_per_second" ? 1 : 2));
    }
    print_row(cells);
  }
  // The legend: one line per column, on the table's stream.
  size_t name_width = 0;
  for (const TableColumn& c : columns) name_width = std::max(name_width, std::strlen(c.heading));
  std::printf("\ncolumns:\n");
  for (const TableColumn& c : columns)
    std::printf("  %-*s  %s\n", static_cast<int>(name_width), c.heading, c.meaning);
}

}  // namespace

// Held-out openings of verses the bundled model never trained on: its training split leaves out
// every 50th chapter of the King James Bible in canonical order (scripts/train_default.py,
// models/README.md); these open verses of such chapters, as Debian's bible-kjv prints them. The
// same words can occur elsewhere in the Bible (Psalm 22:1 is quoted in Matthew 27:46).
const std::vector<std::string>& builtin_bench_prompts() {
  static const std::vector<std::string> prompts = {
      "And Joseph fell upon his father's face,",                // Genesis 50:1 (chapter 50)
      "Man that is born of a woman",                            // Job 14:1 (chapter 450)
      "My God, my God, why hast thou forsaken me?",             // Psalms 22:1 (chapter 500)
      "I was glad when they said unto me,",                     // Psalms 122:1 (chapter 600)
      "Train up a child in the way he should go:",              // Proverbs 22:6 (chapter 650)
      "Run ye to and fro through the streets of Jerusalem,",    // Jeremiah 5:1 (chapter 750)
      "It is of the LORD's mercies that we are not consumed,",  // Lamentations 3:22 (chapter 800)
      "For God so loved the world,",                            // John 3:16 (chapter 1000)
  };
  return prompts;
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double at = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(at);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (at - static_cast<double>(lo));
}

CLI::App* add_bench_command(CLI::App& app, BenchOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "bench", "Time generation over a matrix of settings (warm-up, then repeated runs)");
  add_common_options(*cmd, o.common, {"text", "json", "csv"});
  cmd->add_option("--synthetic", o.synthetic,
                  "Random weights of a real shape instead of a model: llada-8b, dream-7b, "
                  "llada2-mini, llada-moe-7b, default, or a config.json path")
      ->check(non_empty());
  cmd->add_option("--layers", o.layers,
                  "Keep only the first N layers of the --synthetic shape (1 to its layer count), so "
                  "a shape too big for memory runs; ms/layer gives the per-layer cost")
      ->transform(bounded(1, 1 << 16, "at most the shape's layer count"));
  cmd->add_option("--gen-length", o.gen_lengths, "Answer lengths, comma-separated (default: the model's)")
      ->delimiter(',')
      ->transform(bounded(1, kMaxSteps));
  cmd->add_option("--batch-size", o.batch_sizes, "Requests per batch, comma-separated")
      ->delimiter(',')
      ->transform(bounded(1, kMaxBatchSize, "each request in flight reserves its canvas' activations"))
      ->capture_default_str();
  cmd->add_option("--steps", o.steps,
                  "Sampling steps, comma-separated (default: gen-length; LLaDA2's loop: steps per "
                  "block, default block-length)")
      ->delimiter(',')
      ->transform(bounded(1, kMaxSteps));
  cmd->add_option("--block-length", o.block_lengths,
                  "Block lengths, comma-separated (default: the model's, else 32)")
      ->delimiter(',')
      ->transform(bounded(1, kMaxSteps));
  cmd->add_option("--alg", o.alg,
                  "Unmasking loop: llada or Dream's origin, maskgit_plus, topk_margin, entropy "
                  "(default: the model family's)")
      ->check(non_empty());
  cmd->add_option("--prompt-length", o.prompt_length,
                  "Prompt tokens per request, random ids (--synthetic only; default 16)")
      ->transform(bounded(1, 1 << 20, "the canvas is checked against the model's length too"));
  cmd->add_option("--prompts", o.prompts_file,
                  "Text prompts for a model, one a line (UTF-8, blank lines skipped), cycled over "
                  "each configuration's requests and runs (default: 8 built-in verse openings)")
      ->type_name("FILE")
      ->check(non_empty());
  cmd->add_option("--cfg-scale", o.cfg_scale, "Classifier-free guidance scale (0: off)")
      ->transform(decimal_number())
      ->capture_default_str();
  cmd->add_option("--threshold", o.threshold, "Parallel decoding confidence threshold")
      ->transform(decimal_number());
  cmd->add_option("--factor", o.factor, "Parallel decoding factor rule (see generate --help)")
      ->transform(decimal_number());
  cmd->add_option("--cache", o.caches,
                  "KV cache modes to compare, comma-separated: none, prefix, dual or block (default: "
                  "the loop's own: block for LLaDA2's loop, else none)")
      ->delimiter(',')
      ->check(CLI::IsMember({"none", "prefix", "dual", "block"}));
  cmd->add_option("--warmup", o.warmup, "Untimed runs per configuration")
      ->transform(bounded(0, 1000, "runs are sequential; more only lengthens the benchmark"))
      ->capture_default_str();
  cmd->add_option("--repeat", o.repeat, "Timed runs per configuration")
      ->transform(bounded(1, 10000, "each timed run keeps its timings; more only lengthens the benchmark"))
      ->capture_default_str();
  cmd->add_flag("--no-header", o.no_header,
                "CSV rows without the header line; left out anyway when stdout is a non-empty "
                "file opened for appending (>>) or written past its start");
  cmd->add_flag("--baseline", o.baseline,
                "Also time the backend's matmul on the largest weight shape and report the "
                "forward's fraction of it");
  return cmd;
}

int run_bench(const BenchOptions& o) {
  const bool synthetic = !o.synthetic.empty();
  if (o.no_header && o.common.format != "csv") fail_usage("--no-header applies to --format csv only");
  const bool header = o.common.format == "csv" && !o.no_header && !stdout_continues_a_file();
  if (synthetic && !o.prompts_file.empty())
    fail_usage("--prompts needs a model's tokenizer; --synthetic has none (its prompts are random "
               "ids, see --prompt-length)");
  if (!synthetic && o.layers)
    fail_usage("--layers keeps the first layers of a --synthetic shape; a model is benched whole");
  if (!synthetic && o.prompt_length)
    fail_usage("--prompt-length sets the random-id prompts of --synthetic; a model is benched on "
               "text: the built-in verse openings, or --prompts FILE");
  // Prompts: random ids for random weights, else text (a bad file fails before the model loads).
  BenchPrompts prompts;
  if (synthetic) {
    prompts.random_length = o.prompt_length.value_or(kDefaultRandomPromptLength);
    prompts.description = "random ids (" + std::to_string(prompts.random_length) + " tokens)";
    prompts.report = {{"source", "random ids"}, {"count", nullptr},
                      {"min_tokens", prompts.random_length}, {"max_tokens", prompts.random_length}};
  } else if (!o.prompts_file.empty()) {
    prompts = read_prompt_file(o.prompts_file);
  } else {
    prompts.texts = builtin_bench_prompts();
    prompts.description = "built-in verse openings (" + std::to_string(prompts.texts.size()) + ")";
    prompts.report = {{"source", "built-in verse openings"}};
  }
  prompts.report["description"] = prompts.description;

  // note: a synthetic shape's cases are checked before its weights are built (16 GB for
  // llada-8b), so a bad option costs nothing.
  if (synthetic) make_cases(o, bench_spec(o).config, true, prompts.longest());
  Subject subject = open_subject(o);
  const ModelConfig& config = subject.model().config();
  if (!synthetic) tokenize_prompts(prompts, *subject.session, o, !o.prompts_file.empty(), o.prompts_file);
  const std::vector<BenchCase> cases = make_cases(o, config, synthetic, prompts.longest());
  if (subject.session) print_notes(subject.session->notes, o.common.quiet);

  ojson report;
  report["unmask_version"] = UNMASK_VERSION;
  report["git_commit"] = UNMASK_GIT_COMMIT;
  report["machine"] = {{"hostname", hostname()}, {"cpu", cpu_model_name()},
                       {"cores", std::thread::hardware_concurrency()}};
  report["backend"] = subject.be().name();
  report["device"] = subject.be().device();
  // How the backend computes (BLAS kernels, weights widened at load): needed to compare machines.
  report["backend_details"] = subject.be().details();
  report["model"] = {{"name", subject.name},
                     {"synthetic", subject.is_synthetic()},
                     {"d_model", config.d_model},
                     {"n_layers", config.n_layers},
                     {"n_heads", config.n_heads},
                     {"n_kv_heads", config.n_kv_heads},
                     {"mlp_hidden_size", config.mlp_hidden},
                     {"vocab_size", config.vocab_size},
                     {"weight_dtype", dtype_name(subject.dtype)},
                     {"weight_bytes", subject.model().weight_bytes()}};
  if (subject.is_synthetic())
    report["model"]["shape_layers"] = subject.synthetic->spec().shape_layers;
  if (config.moe.n_experts > 0) {
    const MoeConfig& m = config.moe;
    report["model"]["n_experts"] = m.n_experts;
    report["model"]["experts_per_token"] = m.top_k;
    report["model"]["expert_hidden_size"] = m.expert_hidden;
    report["model"]["shared_expert_hidden_size"] = m.shared_hidden;
    report["model"]["moe_layers"] = std::count(m.layer_is_moe.begin(), m.layer_is_moe.end(), true);
  }
  report["prompts"] = prompts.report;
  report["warmup"] = o.warmup;
  report["repeat"] = o.repeat;
  report["results"] = ojson::array();
  for (size_t i = 0; i < cases.size(); i++) {
    const BenchCase& c = cases[i];
    if (!o.common.quiet)
      std::cerr << "bench [" << i + 1 << "/" << cases.size() << "] gen-length "
                << c.settings.gen_length << ", batch-size " << c.batch_size << ", steps "
                << c.settings.steps << ", "
                << (c.settings.alg == Algorithm::Llada || c.settings.alg == Algorithm::Llada2
                        ? "block-length " + std::to_string(c.settings.block_length)
                        : std::string("alg ") + algorithm_name(c.settings.alg))
                << ", cache " << cache_mode_name(c.settings.cache) << "\n";
    report["results"].push_back(result_json(run_case(subject, c, o, prompts)));
  }
  // Speed-up: each row's tok/s over the first row's.
  const double first =
      report["results"].empty() ? 0.0 : report["results"][0]["tokens_per_second"].get<double>();
  for (ojson& r : report["results"])
    r["speedup"] = first > 0 ? ojson(r["tokens_per_second"].get<double>() / first) : ojson(nullptr);

  if (o.common.format == "json") {
    std::cout << report.dump(2) << "\n";
  } else if (o.common.format == "csv") {
    print_csv(report, header);
  } else {
    print_table(report);
  }
  finish_stdout();
  return kExitOk;
}

}  // namespace unmask
