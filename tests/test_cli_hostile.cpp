// Odd and hostile inputs: numbers in other bases, empty values, options before a subcommand,
// environment sizes, huge prompts, broken configs, lost output, ids that collide.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "fixtures.h"

using unmask::test::fixture;
using unmask::test::run_unmask;
using unmask::test::TempDir;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {
const std::string kModel = "-m " + fixture("tiny-f32-gqa");
const std::string kGen = kModel + " --gen-length 8 --block-length 8";

// A copy of `fixture_name` in `dir` with config.json edited by `edit`.
std::string edited_model(const TempDir& dir, const std::string& fixture_name,
                         const std::function<void(json&)>& edit) {
  const fs::path to = dir.path / fixture_name;
  fs::copy(fixture(fixture_name), to, fs::copy_options::recursive);
  json j = unmask::test::load_json((to / "config.json").string());
  edit(j);
  std::ofstream(to / "config.json") << j.dump(2);
  return to.string();
}

void usage_error(const std::string& args, const std::string& phrase, int code = 2) {
  CAPTURE(args);
  const auto r = run_unmask(args);
  CHECK(r.exit_code == code);
  CHECK_MESSAGE(r.err.find(phrase) != std::string::npos, r.err);
}
}  // namespace

TEST_CASE("numbers are decimal: no octal, no hex, no wrapped seeds, tiny temperatures refused") {
  const auto ten = run_unmask(kModel + " --gen-length 010 --block-length 10 --seed 007 --format json x");
  REQUIRE(ten.exit_code == 0);
  const auto j = json::parse(ten.out);
  CHECK(j["settings"]["gen_length"] == 10);
  CHECK(j["settings"]["seed"] == 7);
  usage_error(kGen + " --temperature 0x10 x", "--temperature: '0x10' is not a decimal number");
  usage_error(kGen + " --top-k 0x10 x", "--top-k: '0x10' is not a decimal integer");
  usage_error(kGen + " --seed -1 x", "--seed: '-1' is not a non-negative decimal integer");
  usage_error(kGen + " --seed 99999999999999999999 x", "--seed: must be at most 18446744073709551615");
  usage_error(kGen + " --steps 99999999999 x", "--steps: must be in [1, 1048576] (got 99999999999)");
  // Below 1e-6, logits / T overflow a float in Dream's loop: every id became 0.
  usage_error("-m " + fixture("tiny-dream") + " --gen-length 8 --temperature 1e-45 --top-p 0.5 x",
              "--temperature must be a finite number in [1e-06, 100] (or 0: greedy");
  usage_error("-m " + fixture("tiny-dream") + " --gen-length 8 --alg-temp 1e-30 x", "--alg-temp must be");
  // Lists too: "08" is eight, not a bad octal number.
  const auto b = run_unmask("bench " + kModel + " --gen-length 08 --block-length 8 --repeat 1 --warmup 0 --format json");
  REQUIRE(b.exit_code == 0);
  CHECK(json::parse(b.out)["results"][0]["gen_length"] == 8);
}

TEST_CASE("empty values are refused, never read as 'not given'") {
  usage_error("-m '' x", "--model: must not be empty");
  usage_error(kGen + " --alg '' x", "--alg: must not be empty");
  usage_error("bench --synthetic ''", "--synthetic: must not be empty");
  usage_error("batch -i /dev/null -o '' " + kModel, "--output: must not be empty");
  usage_error("batch -i '' -o /dev/null " + kModel, "--input: must not be empty");
}

TEST_CASE("options before a subcommand's name are refused, not dropped") {
  usage_error(kModel + " info", "--model is given before the subcommand 'info': options go after it");
  usage_error("--gen-length 8 batch -i /dev/null -o /dev/null", "--gen-length is given before the subcommand 'batch'");
  usage_error("--format json bench", "--format is given before the subcommand 'bench'");
  usage_error(kModel + " generate x", "--model is given before the subcommand 'generate'");
  usage_error("hello info", "prompt words come before the subcommand 'info'");
}

TEST_CASE("OMP_NUM_THREADS is held to the --threads limit") {
  for (const char* value : {"100000", "99999999999", "abc", "-3"}) {
    CAPTURE(value);
    const std::string cmd = std::string("env OMP_NUM_THREADS=") + value + " " + UNMASK_BINARY + " " + kGen +
                            " x > /dev/null 2> /tmp/unmask_omp_err";
    const int status = std::system(cmd.c_str());
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 2);
    std::ifstream in("/tmp/unmask_omp_err");
    const std::string err((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(err.find(std::string("OMP_NUM_THREADS=") + value + " must be a whole number in [1, ") != std::string::npos);
  }
  const std::string ok = std::string("env OMP_NUM_THREADS=2 ") + UNMASK_BINARY + " -q " + kGen + " x > /dev/null";
  CHECK(std::system(ok.c_str()) == 0);
}

TEST_CASE("a prompt too long for the model is refused before it is tokenized") {
  const std::string big(200000, 'a');
  const auto r = run_unmask(kGen + " -", big);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("the prompt is 200000 bytes, more than the model's 128 positions can hold") != std::string::npos);
  // In a batch, the line becomes an error record.
  TempDir dir("unmask_hostile");
  std::ofstream(dir / "in.jsonl") << json({{"prompt", big}}).dump() << "\n" << R"({"prompt": "x"})" << "\n";
  const auto b = run_unmask("batch " + kGen + " -i " + (dir / "in.jsonl") + " -o " + (dir / "out.jsonl"));
  CHECK(b.exit_code == 4);
  std::ifstream out(dir / "out.jsonl");
  int errors = 0, results = 0;
  for (std::string line; std::getline(out, line);) (json::parse(line).contains("error") ? errors : results)++;
  CHECK(errors == 1);
  CHECK(results == 1);
}

TEST_CASE("broken configs fail by key, never by running out of memory") {
  TempDir dir("unmask_hostile");
  // A layer count no file can back: the first missing tensor is named, exit 3.
  const std::string many = edited_model(dir, "tiny-dream", [](json& j) { j["num_hidden_layers"] = 1000000000; });
  usage_error("-m " + many + " --gen-length 8 x", "tensor 'model.layers.2.input_layernorm.weight' is missing", 3);
  usage_error("bench --synthetic " + many + "/config.json --gen-length 8 --repeat 1 --warmup 0",
              "more than this machine's");
  // A layer count smaller than the file's: the model would run without layers.
  TempDir dir2("unmask_hostile");
  const std::string few = edited_model(dir2, "tiny-dream", [](json& j) { j["num_hidden_layers"] = 1; });
  usage_error("-m " + few + " --gen-length 8 x",
              "tensor 'model.layers.1.input_layernorm.weight' belongs to layer 1, but", 3);
  // Numbers that overflow a float, as the engine holds them.
  TempDir dir3("unmask_hostile");
  const std::string eps = edited_model(dir3, "tiny-f32-gqa", [](json& j) { j["rms_norm_eps"] = 1e39; });
  usage_error("-m " + eps + " --gen-length 8 x", "key 'rms_norm_eps' must fit a float", 3);
  TempDir dir4("unmask_hostile");
  const std::string theta = edited_model(dir4, "tiny-f32-gqa", [](json& j) { j["rope_theta"] = 1e39; });
  usage_error("-m " + theta + " --gen-length 8 x", "key 'rope_theta' must fit a float", 3);
  TempDir dir5("unmask_hostile");
  const std::string big_eps = edited_model(dir5, "tiny-f32-gqa", [](json& j) { j["rms_norm_eps"] = 2.0; });
  usage_error("-m " + big_eps + " --gen-length 8 x", "key 'rms_norm_eps' must be below 1", 3);
}

TEST_CASE("a tokenizer file that is a directory is an input error naming it") {
  TempDir dir("unmask_hostile");
  const fs::path to = dir.path / "m";
  fs::copy(fixture("tiny-f32-gqa"), to, fs::copy_options::recursive);
  fs::remove(to / "tokenizer.model");
  fs::create_directory(to / "tokenizer.model");
  usage_error("-m " + to.string() + " x", "tokenizer.model: not a regular file", 3);
}

TEST_CASE("lost standard output is an error, not a silent success") {
  for (const std::string& args : {kGen + " -q x", kGen + " -q --format json x", "info " + kModel}) {
    CAPTURE(args);
    const std::string cmd = std::string(UNMASK_BINARY) + " " + args + " > /dev/full 2> /tmp/unmask_full_err";
    const int status = std::system(cmd.c_str());
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 1);
  }
}

TEST_CASE("a llama-format model's mask token written in the prompt stays as written") {
  const auto r = run_unmask("-m " + fixture("tiny-llama") + " --mask-id 277 --gen-length 4 --format json 'And God said And'");
  REQUIRE(r.exit_code == 0);
  const auto j = json::parse(r.out);
  CHECK(j["filled_prompt_ids"] == j["prompt_ids"]);
  CHECK(std::count(j["prompt_ids"].begin(), j["prompt_ids"].end(), 277) >= 1);
  CHECK(r.err.find("the prompt holds token 277, which this model also uses as its mask; it stays as written") !=
        std::string::npos);
}

TEST_CASE("batch: an unreadable line never collides with a real id; notes come once for all lines") {
  TempDir dir("unmask_hostile");
  std::ofstream(dir / "in.jsonl") << "not json\n"
                                   << R"({"id": 1, "prompt": "In the beginning"})" << "\n"
                                   << R"({"id": 2.5, "prompt": "x"})" << "\n"
                                   << R"({"id": 3, "prompt": "And God said", "gen_length": 6})" << "\n";
  const auto r = run_unmask("batch " + kModel + " --gen-length 8 -i " + (dir / "in.jsonl") + " -o " +
                            (dir / "out.jsonl"));
  CHECK(r.exit_code == 4);
  std::ifstream out(dir / "out.jsonl");
  std::map<int, json> by_line;
  for (std::string line; std::getline(out, line);) {
    const json rec = json::parse(line);
    by_line[rec["line"].get<int>()] = rec;
  }
  REQUIRE(by_line.size() == 4);
  CHECK(by_line[1]["id"].is_null());
  CHECK(by_line[1]["error"].get<std::string>().find("invalid JSON at line 1, column 2") == 0);
  CHECK(by_line[2].contains("ids"));
  CHECK(by_line[3]["id"].is_null());
  CHECK(by_line[4].contains("ids"));
  // gen_length 6 on line 4 changes the block length: said, naming the key.
  CHECK(r.err.find("does not divide 'gen_length' 6") != std::string::npos);
  // Resuming reruns only the unreadable lines, keyed by their line numbers.
  const auto again = run_unmask("batch " + kModel + " --gen-length 8 -i " + (dir / "in.jsonl") + " -o " +
                                (dir / "out.jsonl") + " --resume");
  CHECK(again.exit_code == 4);
  CHECK(again.err.find("retrying 2 line(s)") != std::string::npos);
  CHECK(again.err.find("2 already in") != std::string::npos);
}
