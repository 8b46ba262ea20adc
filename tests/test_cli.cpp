// The unmask executable: output streams, JSON shape, prompt from stdin, errors and exit codes.
#include <doctest/doctest.h>

#include <filesystem>

#include "fixtures.h"

using unmask::test::fixture;
using unmask::test::run_unmask;
namespace fs = std::filesystem;

namespace {
const std::string kModel = "-m " + fixture("tiny-f32-gqa");

// A copy of a fixture model directory with one file replaced, for malformed-model tests.
std::string broken_model(const std::string& name, const std::string& file, const std::string& content) {
  const fs::path dir = fs::temp_directory_path() / ("unmask_cli_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"})
    fs::copy_file(fixture("tiny-f32-gqa") + "/" + f, dir / f);
  if (!file.empty()) {
    fs::remove(dir / file);
    if (!content.empty()) std::ofstream(dir / file, std::ios::binary) << content;
  }
  return dir.string();
}
}  // namespace

TEST_CASE("generate: text on stdout, stats on stderr, JSON on request") {
  const auto r = run_unmask(kModel + " --gen-length 16 --steps 16 --block-length 16 'In the beginning'");
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.find("tok/s") != std::string::npos);
  CHECK(r.out.find("tok/s") == std::string::npos);

  const auto j = run_unmask(kModel + " --gen-length 16 --steps 16 --block-length 16 --format json 'In the beginning'");
  REQUIRE(j.exit_code == 0);
  const auto doc = nlohmann::json::parse(j.out);
  // Same ids as the reference fixture g16_s16_b16.
  const auto cases = unmask::test::load_json(fixture("generate.json"))["cases"];
  CHECK(doc["ids"] == cases[0]["expected_ids"]);
  CHECK(doc["prompt_ids"] == cases[0]["prompt_ids"]);
  CHECK(doc["text"] == cases[0]["expected_text"]);
  CHECK(r.out == doc["text"].get<std::string>() + "\n");
  for (const char* key : {"prompt_tokens", "generated_tokens", "steps", "forward_passes", "seconds",
                          "tokens_per_second", "ms_per_step", "backend", "device", "peak_memory_bytes"})
    CHECK_MESSAGE(doc["stats"].contains(key), key);
  CHECK(doc["stats"]["steps"] == 16);
  CHECK(doc["stats"]["forward_passes"] == 16);
  CHECK(doc["settings"]["gen_length"] == 16);
}

TEST_CASE("generate reads the prompt from stdin when absent or '-'") {
  const std::string opts = kModel + " --gen-length 16 --steps 16 --block-length 16 --format json";
  const auto a = run_unmask(opts + " 'In the beginning'");
  const auto b = run_unmask(opts, "In the beginning\n");
  const auto c = run_unmask("generate " + opts + " -", "In the beginning");
  REQUIRE(a.exit_code == 0);
  REQUIRE(b.exit_code == 0);
  REQUIRE(c.exit_code == 0);
  CHECK(nlohmann::json::parse(a.out)["ids"] == nlohmann::json::parse(b.out)["ids"]);
  CHECK(nlohmann::json::parse(a.out)["ids"] == nlohmann::json::parse(c.out)["ids"]);
}

TEST_CASE("bad options are usage errors (exit 2) with one line that says what to change") {
  struct Case { std::string args, phrase; };
  const std::vector<Case> cases = {
      {"--gen-length 10 --block-length 4 x", "not a multiple of --block-length"},
      {"--gen-length 16 --block-length 4 --steps 6 x", "use a multiple of 4"},
      {"--gen-length 200 x", "exceeds the model's max_sequence_length 128"},
      {"--remasking lowest x", "low_confidence or random"},
      {"--top-p 1.5 x", "--top-p"},
      {"--backend tpu x", "--backend"},
      {"--no-such-option x", "no-such-option"},
      {"''", "prompt argument is empty"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.args);
    const auto r = run_unmask(kModel + " " + c.args);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(c.phrase) != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.out.empty());
  }
}

TEST_CASE("bad model directories are input errors (exit 3) naming the file") {
  struct Case { std::string dir, phrase; };
  const std::vector<Case> cases = {
      {"/nonexistent/model", "/nonexistent/model"},
      {broken_model("noconfig", "config.json", ""), "config.json"},
      {broken_model("badjson", "config.json", "{ not json"), "config.json"},
      {broken_model("noweights", "model.safetensors", ""), "model.safetensors"},
      {broken_model("shortweights", "model.safetensors", "abc"), "model.safetensors"},
      {broken_model("notok", "tokenizer.model", ""), "tokenizer"},
      {broken_model("badtok", "tokenizer.model", "garbage"), "tokenizer.model"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.dir);
    const auto r = run_unmask("-m " + c.dir + " --gen-length 8 x");
    CHECK(r.exit_code == 3);
    CHECK(r.err.find(c.phrase) != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
}

TEST_CASE("info describes the model") {
  const auto r = run_unmask("info " + kModel + " --format json");
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["family"] == "llada");
  CHECK(j["n_kv_heads"] == 2);
  CHECK(j["n_heads"] == 4);
  CHECK(j["tokenizer"] == "sentencepiece");
  CHECK(j["mask_token_id"] == 1);
}

TEST_CASE("--help and --version exit 0") {
  CHECK(run_unmask("--help").exit_code == 0);
  const auto v = run_unmask("--version");
  CHECK(v.exit_code == 0);
  CHECK(v.out.find("unmask") != std::string::npos);
}
