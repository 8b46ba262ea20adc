// unmask bench: report fields in JSON and CSV, synthetic models, the settings matrix and percentiles.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "cli/bench.h"
#include "common.h"
#include "fixtures.h"
#include "model/cpu_backend.h"
#include "model/synthetic.h"

using namespace unmask;
using unmask::test::fixture;
using unmask::test::run_unmask;
using json = nlohmann::json;

namespace {

const char* kResultFields[] = {"gen_length", "batch_size", "steps", "block_length", "prompt_length",
                               "runs", "generated_tokens", "wall_seconds", "tokens_per_second",
                               "steps_per_second", "forward_passes", "ms_per_forward_median",
                               "ms_per_forward_p90", "gflops_per_second", "peak_memory_bytes"};

void check_report(const json& j, size_t n_results) {
  for (const char* key : {"git_commit", "backend", "device", "unmask_version"}) {
    CAPTURE(key);
    REQUIRE(j.contains(key));
    CHECK(!j[key].get<std::string>().empty());
  }
  CHECK(j["machine"]["cores"].get<int>() > 0);
  CHECK(!j["machine"]["hostname"].get<std::string>().empty());
  CHECK(!j["machine"]["cpu"].get<std::string>().empty());
  CHECK(j["model"]["weight_bytes"].get<double>() > 0);
  REQUIRE(j["results"].size() == n_results);
  for (const json& r : j["results"]) {
    for (const char* key : kResultFields) {
      CAPTURE(key);
      REQUIRE(r.contains(key));
      CHECK(r[key].get<double>() > 0);
    }
    CHECK(r["ms_per_forward_p90"].get<double>() >= r["ms_per_forward_median"].get<double>());
  }
}

std::string tiny_config(const std::string& dir) {
  const std::string path = dir + "/config.json";
  std::ofstream(path) << R"({"model_type": "llada", "d_model": 32, "n_heads": 2, "n_kv_heads": 1,
    "n_layers": 2, "mlp_hidden_size": 48, "vocab_size": 300, "max_sequence_length": 96,
    "mask_token_id": 5, "eos_token_id": 6, "torch_dtype": "bfloat16", "weight_tying": false,
    "embedding_size": 300, "rope": true, "block_type": "llama", "layer_norm_type": "rms",
    "activation_type": "silu"})";
  return path;
}

}  // namespace

TEST_CASE("percentile interpolates between ranks") {
  CHECK(percentile({}, 0.5) == 0);
  CHECK(percentile({3}, 0.9) == 3);
  CHECK(percentile({4, 1, 3, 2}, 0.5) == doctest::Approx(2.5));
  CHECK(percentile({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 0.9) == doctest::Approx(10));
}

TEST_CASE("bench --format json on the fixture model: the cartesian product, all numbers positive") {
  const auto r = run_unmask("bench -m " + fixture("tiny-f32-gqa") +
                            " --threads 1 --gen-length 8,16 --batch-size 1,3 --repeat 2 --warmup 1 "
                            "--baseline --format json -q");
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.empty());
  const json j = json::parse(r.out);
  check_report(j, 4);
  CHECK(j["model"]["synthetic"] == false);
  CHECK(j["results"][1]["gen_length"] == 8);
  CHECK(j["results"][1]["batch_size"] == 3);
  CHECK(j["results"][2]["gen_length"] == 16);
  for (const json& res : j["results"]) {
    CHECK(res["runs"] == 2);
    CHECK(res["baseline_gflops_per_second"].get<double>() > 0);
    CHECK(res["baseline_fraction"].get<double>() > 0);
    CHECK(res["copy_gbytes_per_second"].get<double>() > 0);
    CHECK(res["weight_bytes"].get<size_t>() > 0);
    // weight_read_ms: the weights' bytes at the copy's traffic rate (read + write bytes per s).
    CHECK(res["weight_read_ms"].get<double>() ==
          doctest::Approx(res["weight_bytes"].get<double>() /
                          (res["copy_gbytes_per_second"].get<double>() * 1e9) * 1e3));
    CHECK(res["forward_over_weight_read"].get<double>() > 0);
    CHECK(res["steps"] == res["gen_length"]);  // steps default to gen-length
  }
}

TEST_CASE("bench --synthetic with a config.json: random weights of that shape, every token counted") {
  const std::string dir = std::filesystem::temp_directory_path() / ("unmask_bench_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string config = tiny_config(dir);
  const auto r = run_unmask("bench --synthetic " + config +
                            " --backend cpu --threads 1 --gen-length 16 --batch-size 2 --steps 8,16 "
                            "--block-length 8 --repeat 1 --warmup 0 --format json -q");
  REQUIRE(r.exit_code == 0);
  const json j = json::parse(r.out);
  check_report(j, 2);
  CHECK(j["model"]["synthetic"] == true);
  CHECK(j["model"]["d_model"] == 32);
  CHECK(j["model"]["weight_dtype"] == "BF16");
  // The CPU says which OpenBLAS kernels and oneDNN it has, and that the bf16 weights were
  // widened at load.
  REQUIRE(j["backend_details"].size() == 3);
  CHECK(j["backend_details"][0].get<std::string>().rfind("blas: OpenBLAS", 0) == 0);
  CHECK(j["backend_details"][1].get<std::string>().rfind("onednn: ", 0) == 0);
  CHECK(j["backend_details"][2].get<std::string>().find("tensors widened to f32 at load") != std::string::npos);
  CHECK(j["backend_details"][2].get<std::string>().find(", 0 widened tile by tile") != std::string::npos);
  for (const json& res : j["results"]) {
    CHECK(res["generated_tokens"] == 32);  // 2 requests x 16, no EOS stop on random weights
    CHECK(res["forward_passes"] == res["steps"]);
  }

  const auto csv = run_unmask("bench --synthetic " + config +
                              " --backend cpu --threads 1 --gen-length 8 --repeat 1 --warmup 0 --format csv -q");
  REQUIRE(csv.exit_code == 0);
  const std::string header = csv.out.substr(0, csv.out.find('\n'));
  for (const char* col : {"hostname", "cpu", "cores", "backend", "device", "git_commit", "model",
                          "gen_length", "batch_size", "tokens_per_second", "steps_per_second",
                          "ms_per_forward_median", "ms_per_forward_p90", "forward_passes",
                          "gflops_per_second", "peak_memory_bytes", "baseline_fraction"}) {
    CAPTURE(col);
    CHECK(("," + header + ",").find("," + std::string(col) + ",") != std::string::npos);
  }
  CHECK(std::count(csv.out.begin(), csv.out.end(), '\n') == 2);

  // Bad matrices fail before any timing.
  CHECK(run_unmask("bench --synthetic " + config + " --gen-length 16 --block-length 5 -q").exit_code == 2);
  CHECK(run_unmask("bench --synthetic nonesuch -q").exit_code == 2);
  std::filesystem::remove_all(dir);
}

TEST_CASE("synthetic models: deterministic weights, finite logits, shapes as named") {
  const SyntheticSpec big = synthetic_spec("llada-8b");
  CHECK(big.config.d_model == 4096);
  CHECK(big.config.n_layers == 32);
  CHECK(big.config.mlp_hidden == 12288);
  CHECK(big.config.vocab_size == 126464);
  CHECK(big.config.mask_token_id == 126336);
  CHECK(big.config.eos_token_id == 126081);
  CHECK(!big.config.weight_tying);
  CHECK(big.dtype == DType::BF16);

  const SyntheticSpec dream = synthetic_spec("dream-7b");
  CHECK(dream.config.family == "dream");
  CHECK(dream.config.d_model == 3584);
  CHECK(dream.config.n_heads == 28);
  CHECK(dream.config.n_kv_heads == 4);
  CHECK(dream.config.head_dim == 128);
  CHECK(dream.config.mlp_hidden == 18944);
  CHECK(dream.config.embedding_size == 152064);
  CHECK(dream.config.include_qkv_bias);
  CHECK(dream.config.shifted_logits);
  CHECK(dream.config.mask_token_id == 151666);
  CHECK(dream.dtype == DType::BF16);

  const std::string dir = std::filesystem::temp_directory_path() / ("unmask_synth_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const SyntheticSpec spec = synthetic_spec(tiny_config(dir));
  std::filesystem::remove_all(dir);
  std::vector<float> first;
  for (int round = 0; round < 2; round++) {
    auto backend = make_cpu_backend(1);
    SyntheticModel synthetic(*backend, spec);
    ForwardBatch batch;
    batch.clear();
    const std::vector<int32_t> prompt = random_prompt(spec.config, 10, 7);
    for (int32_t id : prompt) {
      CHECK(id != spec.config.mask_token_id);
      CHECK(id != spec.config.eos_token_id);
    }
    batch.add_sequence(prompt);
    batch.out_rows = {0, 9};
    Tensor logits = synthetic.model().forward(batch);
    std::vector<float> values(logits.f32(), logits.f32() + logits.numel());
    for (float v : values) REQUIRE(std::isfinite(v));
    if (round == 0) first = values;
    else CHECK(values == first);
  }
}

TEST_CASE("bench: every row's peak memory is its own, whatever ran before it") {
  // The same small row alone, after a larger row, and after a row followed by --baseline's
  // 512 MiB of copy buffers: its peak must be the same bytes each time.
  const std::string common = "bench -m " + fixture("tiny-f32-gqa") +
                             " --threads 1 --gen-length 8 --repeat 1 --warmup 0 --format json -q";
  auto peaks = [](const std::string& out) {
    const json j = json::parse(out);
    std::vector<double> p;
    for (const json& r : j["results"]) p.push_back(r["peak_memory_bytes"].get<double>());
    return p;
  };
  const auto alone = run_unmask(common + " --batch-size 1");
  REQUIRE(alone.exit_code == 0);
  const double own = peaks(alone.out).at(0);
  CHECK(own > 0);

  const auto after_larger = run_unmask(common + " --batch-size 16,1");
  REQUIRE(after_larger.exit_code == 0);
  const std::vector<double> p = peaks(after_larger.out);
  REQUIRE(p.size() == 2);
  CHECK(p[0] > own);  // 16 requests hold more than one
  CHECK(p[1] == own);

  const auto baseline = run_unmask(common + " --batch-size 1,1 --baseline");
  REQUIRE(baseline.exit_code == 0);
  const std::vector<double> b = peaks(baseline.out);
  REQUIRE(b.size() == 2);
  CHECK(b[0] == own);
  CHECK(b[1] == own);  // was own + 512 MiB: the baseline's copy buffers
}

TEST_CASE("bench reports tokens per run, ms per token, the tok/s range over the repeats and the speed-up") {
  unmask::test::TempDir dir("unmask_bench_cols");
  const std::string config = tiny_config(dir.path.string());
  const std::string args = "bench --synthetic " + config +
                           " --backend cpu --threads 1 --gen-length 16 --batch-size 1,3 "
                           "--block-length 16 --repeat 3 --warmup 0 -q";
  const auto r = run_unmask(args + " --format json");
  REQUIRE(r.exit_code == 0);
  const json j = json::parse(r.out);
  REQUIRE(j["results"].size() == 2);
  const double first = j["results"][0]["tokens_per_second"].get<double>();
  for (const json& res : j["results"]) {
    // Synthetic weights: every generated position counts, in every run.
    CHECK(res["generated_tokens"] == 16 * res["batch_size"].get<int>());
    const double tok_s = res["tokens_per_second"].get<double>();
    CHECK(res["ms_per_token"].get<double>() == doctest::Approx(1000.0 / tok_s));
    CHECK(res["tokens_per_second_min"].get<double>() <= tok_s);
    CHECK(res["tokens_per_second_max"].get<double>() >= tok_s);
    CHECK(res["tokens_per_second_min"].get<double>() > 0);
    CHECK(res["speedup"].get<double>() == doctest::Approx(tok_s / first));
  }
  CHECK(j["results"][0]["speedup"].get<double>() == 1.0);

  const auto csv = run_unmask(args + " --format csv");
  REQUIRE(csv.exit_code == 0);
  const std::string header = csv.out.substr(0, csv.out.find('\n'));
  for (const char* col : {"generated_tokens", "ms_per_token", "tokens_per_second_min",
                          "tokens_per_second_max", "speedup"}) {
    CAPTURE(col);
    CHECK(("," + header + ",").find("," + std::string(col) + ",") != std::string::npos);
  }

  const auto text = run_unmask(args);
  REQUIRE(text.exit_code == 0);
  for (const char* col : {"tokens", "tok/s min-max", "ms/tok", "speed-up"}) {
    CAPTURE(col);
    CHECK(text.out.find(col) != std::string::npos);
  }
  CHECK(text.out.find(" 1.00x ") != std::string::npos);  // the first row against itself
  CHECK(text.out.find("      48 ") != std::string::npos);  // 3 requests x 16 tokens
}

namespace {

// generate's own statistics for `prompt` on the bundled model: {answer tokens counted, prompt tokens}.
std::pair<int, int> generate_counts(const std::string& prompt, const std::string& settings) {
  std::string quoted = "'";
  for (char c : prompt) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  const auto g = run_unmask(settings + " --format json " + quoted + "'");
  REQUIRE(g.exit_code == 0);
  const json j = json::parse(g.out);
  return {j["stats"]["generated_tokens"].get<int>(), j["stats"]["prompt_tokens"].get<int>()};
}

}  // namespace

TEST_CASE("bench on a model prompts with built-in verse openings, and the header and JSON say so") {
  const std::string args = "bench --gen-length 32 --block-length 4 --repeat 1 --warmup 0 -q";
  const auto r = run_unmask(args + " --batch-size 8 --format json");  // the bundled model
  REQUIRE(r.exit_code == 0);
  const json j = json::parse(r.out);
  CHECK(j["prompts"]["source"] == "built-in verse openings");
  CHECK(j["prompts"]["description"] == "built-in verse openings (8)");
  CHECK(j["prompts"]["count"] == builtin_bench_prompts().size());
  REQUIRE(builtin_bench_prompts().size() == 8);
  // One request per built-in prompt: the tokens are those generate counts for each of them.
  int tokens = 0, prompt_tokens = 0;
  for (const std::string& p : builtin_bench_prompts()) {
    const auto [answer, prompt] = generate_counts(p, "--gen-length 32 --block-length 4");
    tokens += answer;
    prompt_tokens += prompt;
  }
  CHECK(j["results"][0]["generated_tokens"] == tokens);
  CHECK(j["results"][0]["prompt_length"].get<double>() == doctest::Approx(prompt_tokens / 8.0));
  CHECK(tokens > 8 * 2);  // not the one-token answers of random ids

  const auto text = run_unmask(args);
  REQUIRE(text.exit_code == 0);
  CHECK(text.out.find("\nprompts: built-in verse openings (8)\n") != std::string::npos);
  const auto csv = run_unmask(args + " --format csv");
  REQUIRE(csv.exit_code == 0);
  CHECK(csv.out.find(",\"built-in verse openings (8)\",") != std::string::npos);

  // Random weights keep random ids, of --prompt-length tokens.
  unmask::test::TempDir dir("unmask_bench_random");
  const auto s = run_unmask("bench --synthetic " + tiny_config(dir.path.string()) +
                            " --threads 1 --gen-length 8 --prompt-length 7 --repeat 1 --warmup 0 -q");
  REQUIRE(s.exit_code == 0);
  CHECK(s.out.find("\nprompts: random ids (7 tokens)\n") != std::string::npos);
}

TEST_CASE("bench --prompts FILE: one prompt a line, blank lines skipped, cycled over requests and runs") {
  unmask::test::TempDir dir("unmask_bench_prompts");
  const std::string file = dir / "prompts.txt";
  // CRLF line ends, a blank line and one of spaces: three prompts.
  std::ofstream(file, std::ios::binary) << "In the beginning\r\n\r\n   \nJesus wept\r\n"
                                           "And God said unto Moses, I AM THAT I AM\n";
  const std::string gen = "--gen-length 32 --block-length 4";
  const std::pair<int, int> counts[] = {generate_counts("In the beginning", gen),
                                        generate_counts("Jesus wept", gen),
                                        generate_counts("And God said unto Moses, I AM THAT I AM", gen)};
  // 2 requests x 2 runs: prompts 1, 2 | 3, 1.
  const auto r = run_unmask("bench " + gen + " --prompts " + file +
                            " --batch-size 2 --repeat 2 --warmup 0 -q --format json");
  REQUIRE(r.exit_code == 0);
  const json j = json::parse(r.out);
  CHECK(j["prompts"]["source"] == "file");
  CHECK(j["prompts"]["file"] == file);
  CHECK(j["prompts"]["description"] == file + " (3 lines)");
  CHECK(j["prompts"]["count"] == 3);
  const json& res = j["results"][0];
  const double tokens = (counts[0].first + counts[1].first + counts[2].first + counts[0].first) / 2.0;
  const double prompt = (counts[0].second + counts[1].second + counts[2].second + counts[0].second) / 4.0;
  CHECK(res["generated_tokens"].get<double>() == doctest::Approx(tokens));
  CHECK(res["prompt_length"].get<double>() == doctest::Approx(prompt));

  const auto text = run_unmask("bench " + gen + " --prompts " + file + " --repeat 1 --warmup 0 -q");
  REQUIRE(text.exit_code == 0);
  CHECK(text.out.find("\nprompts: " + file + " (3 lines)\n") != std::string::npos);
}

TEST_CASE("bench --prompts: a bad file is one line naming it (and the line), exit 3; bad combinations exit 2") {
  unmask::test::TempDir dir("unmask_bench_badprompts");
  auto expect = [](const std::string& args, int code, const std::string& phrase) {
    CAPTURE(args);
    const auto r = run_unmask("bench --gen-length 16 --block-length 4 --repeat 1 --warmup 0 -q " + args);
    CHECK(r.exit_code == code);
    CHECK(r.err.find(phrase) != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.out.empty());
  };
  const std::string missing = dir / "missing.txt";
  expect("--prompts " + missing, 3, missing + ": cannot read it: no such file");
  expect("--prompts " + dir.path.string(), 3, "it is a directory");
  const std::string bad = dir / "bad.txt";
  std::ofstream(bad, std::ios::binary) << "In the beginning\n\nJesus \xff wept\n";
  expect("--prompts " + bad, 3, bad + ":3: not valid UTF-8");
  const std::string nul = dir / "nul.txt";
  std::ofstream(nul, std::ios::binary) << std::string("a\0b\n", 4);
  expect("--prompts " + nul, 3, nul + ":1: holds a NUL byte");
  const std::string blank = dir / "blank.txt";
  std::ofstream(blank) << "\n  \n\t\n";
  expect("--prompts " + blank, 3, blank + ": no prompts: every line is blank");
  const std::string longer = dir / "long.txt";
  std::ofstream(longer) << "Jesus wept\n" << std::string(3000, 'x') << "\n";
  expect("--prompts " + longer, 3, longer + ":2: the prompt's");
  expect("--prompts " + bad + " --synthetic default", 2, "--prompts needs a model's tokenizer");
  expect("--prompt-length 8", 2, "--prompt-length sets the random-id prompts of --synthetic");
}

TEST_CASE("bench --format csv: one header when appended (>> or a continued >), none with --no-header") {
  unmask::test::TempDir dir("unmask_bench_csv");
  const std::string args = " bench --synthetic " + tiny_config(dir.path.string()) +
                           " --threads 1 --gen-length 8 --batch-size 1,2 --repeat 1 --warmup 0 -q ";
  const std::string bin = "env -u UNMASK_MODEL " + std::string(UNMASK_BINARY) + args;
  auto slurp = [](const std::string& path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  auto lines = [](const std::string& s) { return std::count(s.begin(), s.end(), '\n'); };
  auto headers = [](const std::string& s) {
    size_t n = 0;
    for (size_t at = s.find("hostname,"); at != std::string::npos; at = s.find("hostname,", at + 1)) n++;
    return n;
  };

  const auto plain = run_unmask(args + "--format csv");  // to a fresh file: the header
  REQUIRE(plain.exit_code == 0);
  CHECK(plain.out.rfind("hostname,cpu,", 0) == 0);
  CHECK(lines(plain.out) == 3);

  const auto bare = run_unmask(args + "--format csv --no-header");
  REQUIRE(bare.exit_code == 0);
  CHECK(headers(bare.out) == 0);
  CHECK(lines(bare.out) == 2);

  // Appending twice: one header, then four rows.
  const std::string appended = dir / "runs.csv";
  for (int i = 0; i < 2; i++)
    REQUIRE(std::system((bin + "--format csv >> " + appended + " 2>&1").c_str()) == 0);
  const std::string a = slurp(appended);
  CHECK(headers(a) == 1);
  CHECK(a.rfind("hostname,cpu,", 0) == 0);
  CHECK(lines(a) == 5);

  // Two commands under one > redirection: the second starts past the file's start.
  const std::string continued = dir / "continued.csv";
  REQUIRE(std::system(("(" + bin + "--format csv; " + bin + "--format csv) > " + continued).c_str()) == 0);
  CHECK(headers(slurp(continued)) == 1);
  CHECK(lines(slurp(continued)) == 5);

  // > empties the file first: the header again.
  REQUIRE(std::system((bin + "--format csv > " + appended).c_str()) == 0);
  CHECK(headers(slurp(appended)) == 1);
  CHECK(lines(slurp(appended)) == 3);

  const auto json_bad = run_unmask(args + "--format json --no-header");
  CHECK(json_bad.exit_code == 2);
  CHECK(json_bad.err.find("--no-header applies to --format csv only") != std::string::npos);
}

TEST_CASE("bench's text table ends with a legend: one line per column, on stdout") {
  unmask::test::TempDir dir("unmask_bench_legend");
  const std::string args = "bench --synthetic " + tiny_config(dir.path.string()) +
                           " --threads 1 --gen-length 8 --repeat 1 --warmup 0 -q";
  const std::vector<std::string> columns = {
      "cache", "gen", "batch", "steps", "block", "tokens", "tok/s", "tok/s min-max", "ms/tok",
      "speed-up", "steps/s", "ms/fwd", "p90 ms", "ms/layer", "fwd", "GFLOP/s", "peak MiB", "RSS MiB"};
  const std::vector<std::string> baseline = {"GEMM GF/s", "frac", "copy GB/s", "fwd/read"};
  for (bool with_baseline : {false, true}) {
    CAPTURE(with_baseline);
    const auto r = run_unmask(args + (with_baseline ? " --baseline" : ""));
    REQUIRE(r.exit_code == 0);
    const size_t at = r.out.find("\ncolumns:\n");
    REQUIRE(at != std::string::npos);
    const std::string table = r.out.substr(0, at), legend = r.out.substr(at + 10);
    auto legend_line = [&](const std::string& name) {
      return ("\n" + legend).find("\n  " + name + "  ") != std::string::npos;
    };
    for (const std::string& c : columns) {
      CAPTURE(c);
      CHECK(table.find(c) != std::string::npos);
      CHECK(legend_line(c));
    }
    for (const std::string& c : baseline) {
      CAPTURE(c);
      CHECK(legend_line(c) == with_baseline);
      CHECK((table.find(c) != std::string::npos) == with_baseline);
    }
    CHECK(static_cast<size_t>(std::count(legend.begin(), legend.end(), '\n')) ==
          columns.size() + (with_baseline ? baseline.size() : 0));
    CHECK(legend.find("MiB (2^20 bytes)") != std::string::npos);
  }
}

namespace {

// tests/fixtures/tiny-llada2's config.json (LLaDA2: 3 layers, layer 0 dense, 8 experts top 2 in
// 4 groups, a shared expert), its weights in `dtype`.
std::string tiny_llada2_config(const unmask::test::TempDir& dir, const std::string& dtype) {
  json j = unmask::test::load_json(fixture("tiny-llada2/config.json"));
  j["torch_dtype"] = dtype;
  const std::string path = dir / "config.json";
  std::ofstream(path) << j.dump();
  return path;
}

}  // namespace

TEST_CASE("synthetic MoE shapes: llada2-mini and llada-moe-7b as published; keep_layers cuts them") {
  const SyntheticSpec mini = synthetic_spec("llada2-mini");
  const ModelConfig& c = mini.config;
  CHECK(c.family == "llada2");
  CHECK(c.d_model == 2048);
  CHECK(c.n_heads == 16);
  CHECK(c.n_kv_heads == 4);
  CHECK(c.head_dim == 128);
  CHECK(c.rotary_dim == 64);  // partial_rotary_factor 0.5
  CHECK(c.n_layers == 20);
  CHECK(mini.shape_layers == 20);
  CHECK(c.mlp_hidden == 5120);
  CHECK(c.moe.n_experts == 256);
  CHECK(c.moe.top_k == 8);
  CHECK(c.moe.expert_hidden == 512);
  CHECK(c.moe.n_group == 8);
  CHECK(c.moe.topk_group == 4);
  CHECK(c.moe.shared_hidden == 512);
  CHECK(c.moe.routed_scale == 2.5);
  CHECK(c.moe.sigmoid_scores);
  CHECK(c.moe.has_expert_bias);
  CHECK(c.moe.layer_is_moe.size() == 20);
  CHECK(!c.moe.layer_is_moe[0]);
  CHECK(c.moe.layer_is_moe[1]);
  CHECK(c.moe.layer_is_moe[19]);
  CHECK(c.rope_theta == 600000.0);
  CHECK(c.rms_eps == 1e-6);
  CHECK(c.vocab_size == 157184);
  CHECK(c.embedding_size == 157184);
  CHECK(c.qk_norm);
  CHECK(c.block_causal);
  CHECK(!c.weight_tying);
  CHECK(c.mask_token_id == 156895);
  CHECK(c.eos_token_id == 156892);
  CHECK(mini.dtype == DType::BF16);
  CHECK(c.assumed.empty());  // every value is written, none is a class default
  // bf16 weights: embedding and head, 20 layers' attention and norms, one dense MLP, 19 MoE MLPs
  // (router, 256 experts, the shared expert) and 19 f32 expert biases: LLaDA2.0-mini's 16B.
  const double d = 2048, attention = d * (16 + 2 * 4) * 128 + 16 * 128 * d + 2 * d + 2 * 128;
  const double moe = 256 * d + 3 * d * 512 * 257;
  const double elements = 2 * 157184 * d + d + 20 * attention + 3 * d * 5120 + 19 * moe;
  CHECK(synthetic_weight_bytes(mini) == doctest::Approx(2 * elements + 19 * 256 * 4));
  CHECK(synthetic_weight_bytes(mini) > 30e9);

  SyntheticSpec cut = mini;
  keep_layers(cut, 4);
  CHECK(cut.config.n_layers == 4);
  CHECK(cut.shape_layers == 20);
  CHECK(cut.config.moe.layer_is_moe == std::vector<bool>{false, true, true, true});
  CHECK(synthetic_weight_bytes(cut) ==
        doctest::Approx(2 * (2 * 157184 * d + d + 4 * attention + 3 * d * 5120 + 3 * moe) + 3 * 256 * 4));
  for (int64_t bad : {0, 21, -1}) {
    CAPTURE(bad);
    SyntheticSpec s = mini;
    try {
      keep_layers(s, bad);
      FAIL("keep_layers accepted " << bad);
    } catch (const Error& e) {
      CHECK(e.exit_code() == kExitUsage);
      CHECK(std::string(e.what()).find("--layers") != std::string::npos);
      CHECK(std::string(e.what()).find("[1, 20]") != std::string::npos);
    }
  }

  const SyntheticSpec moe7 = synthetic_spec("llada-moe-7b");
  const ModelConfig& m = moe7.config;
  CHECK(m.family == "llada_moe");
  CHECK(m.d_model == 2048);
  CHECK(m.n_layers == 16);
  CHECK(m.n_heads == 16);
  CHECK(m.n_kv_heads == 16);
  CHECK(m.head_dim == 128);
  CHECK(m.rotary_dim == 128);
  CHECK(m.moe.n_experts == 64);
  CHECK(m.moe.top_k == 8);
  CHECK(m.moe.expert_hidden == 1024);
  CHECK(m.moe.shared_hidden == 0);
  CHECK(!m.moe.sigmoid_scores);
  CHECK(!m.moe.has_expert_bias);
  CHECK(!m.moe.renormalize);
  CHECK(std::count(m.moe.layer_is_moe.begin(), m.moe.layer_is_moe.end(), true) == 16);
  CHECK(m.qk_norm);
  CHECK(!m.block_causal);
  CHECK(m.vocab_size == 157184);
  CHECK(m.mask_token_id == 156895);
  CHECK(m.eos_token_id == 156892);
  CHECK(moe7.dtype == DType::BF16);
  // 7B parameters: 14 to 15 GB in bf16.
  CHECK(synthetic_weight_bytes(moe7) > 14e9);
  CHECK(synthetic_weight_bytes(moe7) < 15e9);
}

TEST_CASE("synthetic MoE models: experts, router and f32 expert bias built; weights counted; logits deterministic") {
  unmask::test::TempDir dir("unmask_synth_moe");
  // f32 weights, so the CPU backend stores every tensor as given and the bytes compare exactly.
  SyntheticSpec spec = synthetic_spec(tiny_llada2_config(dir, "float32"));
  CHECK(spec.config.family == "llada2");
  for (int64_t layers : {int64_t{3}, int64_t{2}}) {
    CAPTURE(layers);
    keep_layers(spec, layers);
    std::vector<float> first;
    for (int round = 0; round < 2; round++) {
      auto backend = make_cpu_backend(1);
      SyntheticModel synthetic(*backend, spec);
      // Every weight, the experts and the f32 expert biases included, is in the model's count.
      CHECK(static_cast<double>(synthetic.model().weight_bytes()) == synthetic_weight_bytes(spec));
      ForwardBatch batch;
      batch.clear();
      batch.add_sequence(random_prompt(spec.config, 12, 3));
      batch.block_size = 4;
      batch.out_rows = {0, 5, 11};
      Tensor logits = synthetic.model().forward(batch);
      std::vector<float> values(logits.f32(), logits.f32() + logits.numel());
      for (float v : values) REQUIRE(std::isfinite(v));
      if (round == 0) first = values;
      else CHECK(values == first);
    }
  }
  // bf16: the expert bias alone stays f32 (4 bytes an expert), the rest 2 bytes a value.
  const SyntheticSpec bf16 = synthetic_spec(tiny_llada2_config(dir, "bfloat16"));
  const SyntheticSpec f32 = synthetic_spec(tiny_llada2_config(dir, "float32"));
  CHECK(synthetic_weight_bytes(f32) - 2 * 8 * 4 == doctest::Approx(2 * (synthetic_weight_bytes(bf16) - 2 * 8 * 4)));
}

TEST_CASE("bench --synthetic MoE --layers N: the first N layers, the loop's own cache, ms per layer, peak RSS") {
  unmask::test::TempDir dir("unmask_bench_moe");
  const std::string config = tiny_llada2_config(dir, "bfloat16");
  // gen-length 40 is no multiple of the block length 32: LLaDA2 pads its canvas to whole blocks.
  const std::string args = "bench --synthetic " + config + " --backend cpu --threads 1 --repeat 1 --warmup 0 -q";
  const auto r = run_unmask(args + " --gen-length 8,40 --layers 2 --format json");
  REQUIRE(r.exit_code == 0);
  const json j = json::parse(r.out);
  check_report(j, 2);
  CHECK(j["model"]["n_layers"] == 2);
  CHECK(j["model"]["shape_layers"] == 3);
  CHECK(j["model"]["n_experts"] == 8);
  CHECK(j["model"]["experts_per_token"] == 2);
  CHECK(j["model"]["moe_layers"] == 1);
  CHECK(j["model"]["name"].get<std::string>().find("(first 2 of 3 layers)") != std::string::npos);
  for (const json& res : j["results"]) {
    CHECK(res["alg"] == "llada2");
    CHECK(res["cache"] == "block");  // LLaDA2's default, not none
    CHECK(res["block_length"] == 32);
    CHECK(res["generated_tokens"] == res["gen_length"]);
    CHECK(res["ms_per_layer"].get<double>() == doctest::Approx(res["ms_per_forward_median"].get<double>() / 2));
    CHECK(res["peak_rss_bytes"].get<double>() >= res["peak_memory_bytes"].get<double>());
  }

  // --cache block is a mode to compare; the whole shape without --layers.
  const auto both = run_unmask(args + " --gen-length 40 --cache none,block --format json");
  REQUIRE(both.exit_code == 0);
  const json b = json::parse(both.out);
  REQUIRE(b["results"].size() == 2);
  CHECK(b["model"]["n_layers"] == 3);
  CHECK(b["model"]["name"].get<std::string>().find("first") == std::string::npos);
  CHECK(b["results"][0]["cache"] == "none");
  CHECK(b["results"][1]["cache"] == "block");

  // A dense shape keeps none as its default.
  unmask::test::TempDir dense_dir("unmask_bench_dense");
  const auto dense = run_unmask("bench --synthetic " + tiny_config(dense_dir.path.string()) +
                                " --backend cpu --threads 1 --gen-length 8 --repeat 1 --warmup 0 -q --format json");
  REQUIRE(dense.exit_code == 0);
  CHECK(json::parse(dense.out)["results"][0]["cache"] == "none");

  // Bad --layers: one line naming the option, exit 2, before any weight is built.
  for (const std::string bad : {" --layers 4", " --layers 0", " --layers x"}) {
    CAPTURE(bad);
    const auto e = run_unmask(args + bad);
    CHECK(e.exit_code == 2);
    CHECK(e.err.find("--layers") != std::string::npos);
    CHECK(std::count(e.err.begin(), e.err.end(), '\n') == 1);
  }
  const auto model = run_unmask("bench -m " + fixture("tiny-llada2") + " --layers 1 -q");
  CHECK(model.exit_code == 2);
  CHECK(model.err.find("--layers") != std::string::npos);
  CHECK(model.err.find("--synthetic") != std::string::npos);
}
