// The command line's inputs: the prompt's words and stdin, numbers that must be finite and in
// range, and sizes bounded before anything is allocated.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "fixtures.h"

using unmask::test::fixture;
using unmask::test::run_unmask;
namespace fs = std::filesystem;

namespace {
const std::string kModel = "-m " + fixture("tiny-f32-gqa");
const std::string kGen = kModel + " --gen-length 16 --steps 16 --block-length 16";

// Runs a shell command line; returns its stdout.
std::string shell(const std::string& command) {
  const std::string out = "/tmp/unmask_shell_" + std::to_string(::getpid());
  const std::string line = "env -u UNMASK_MODEL sh -c '" + command + "' > " + out + " 2>&1";
  CHECK(std::system(line.c_str()) != -1);
  std::ifstream in(out);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::remove(out.c_str());
  return text;
}

// Writes `text` to a fresh file under /tmp and returns its path.
std::string temp_file(const std::string& name, const std::string& text) {
  const std::string path = "/tmp/unmask_input_" + std::to_string(::getpid()) + "_" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}
}  // namespace

TEST_CASE("an explicitly empty prompt is a usage error and leaves stdin to the shell loop") {
  // In `while read p; do unmask "$p"; done`, an empty line must not swallow the rest of the file.
  const std::string out = shell("printf \"A\\nB\\n\" | { " + std::string(UNMASK_BINARY) + " " + kGen +
                                " \"\"; echo \"rc=$?\"; cat; }");
  CHECK(out.find("prompt argument is empty") != std::string::npos);
  CHECK(out.find("rc=2") != std::string::npos);
  CHECK(out.find("A\nB\n") != std::string::npos);
  // Several empty words are empty too.
  CHECK(run_unmask(kGen + " '' ''", "In the beginning\n").exit_code == 2);
}

TEST_CASE("prompt words are joined by spaces, as echo joins them") {
  const auto quoted = run_unmask(kGen + " --format json 'In the  beginning'");
  const auto words = run_unmask(kGen + " --format json In the beginning");
  const auto spaced = run_unmask(kGen + " --format json 'In the beginning'");
  REQUIRE(quoted.exit_code == 0);
  REQUIRE(words.exit_code == 0);
  CHECK(nlohmann::json::parse(words.out)["prompt_ids"] == nlohmann::json::parse(spaced.out)["prompt_ids"]);
  // Options after the words still count.
  const auto after = run_unmask(kModel + " In the beginning --gen-length 16 --steps 16 --block-length 16 --format json");
  REQUIRE(after.exit_code == 0);
  CHECK(nlohmann::json::parse(after.out)["ids"] == nlohmann::json::parse(words.out)["ids"]);
}

TEST_CASE("non-finite and out-of-range numbers are refused on the command line, naming the option") {
  struct Case { std::string args, phrase; };
  const std::vector<Case> cases = {
      {"--temperature inf", "--temperature must be a finite number in [1e-06, 100] (or 0: greedy; got inf)"},
      {"--temperature 1e39", "--temperature must be a finite number"},  // overflows a float
      {"--temperature nan", "(or 0: greedy; got nan)"},
      {"--temperature -1", "--temperature"},
      {"--temperature 101", "--temperature"},
      {"--cfg-scale inf", "--cfg-scale must be a finite number in [0, 100]"},
      {"--cfg-scale 1e39", "--cfg-scale"},
      {"--top-p nan", "--top-p must be a finite number in (0, 1]"},
      {"--threshold inf", "--threshold must be a finite number in (0, 1]"},
      {"--factor inf", "--factor must be a finite number in (0, 100]"},
      {"--top-k -1", "--top-k: must be in [0, 2147483647] (got -1)"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.args);
    const auto r = run_unmask(kGen + " " + c.args + " x");
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(c.phrase) != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.out.empty());
  }
  const auto steps = run_unmask(kModel + " --gen-length 16 --block-length 16 --steps 2000000 x");
  CHECK(steps.exit_code == 2);
  CHECK(steps.err.find("--steps: must be in [1, 1048576] (got 2000000)") != std::string::npos);
  const auto dream = run_unmask("-m " + fixture("tiny-dream") + " --gen-length 8 --alg-temp inf x");
  CHECK(dream.exit_code == 2);
  CHECK(dream.err.find("--alg-temp must be a finite number in [1e-06, 100] (or 0: the most confident; got inf)") != std::string::npos);
}

TEST_CASE("non-finite numbers in batch lines become error records naming the key; the rest runs") {
  const std::string in = temp_file("nonfinite.jsonl",
                                   "{\"id\": \"t\", \"prompt\": \"x\", \"temperature\": 1e39}\n"
                                   "{\"id\": \"c\", \"prompt\": \"x\", \"cfg_scale\": -1e300}\n"
                                   "{\"id\": \"p\", \"prompt\": \"x\", \"top_p\": 1e-50}\n"
                                   "{\"id\": \"a\", \"prompt\": \"x\", \"alg_temp\": 1e39}\n"
                                   "{\"id\": \"ok\", \"prompt\": \"x\"}\n");
  const std::string out = in + ".out";
  fs::remove(out);
  const auto r = run_unmask("batch -i " + in + " -o " + out + " " + kGen);
  CHECK(r.exit_code == 4);
  std::ifstream f(out);
  std::map<std::string, nlohmann::json> records;
  for (std::string line; std::getline(f, line);) {
    const auto j = nlohmann::json::parse(line);
    records[j["id"].get<std::string>()] = j;
  }
  REQUIRE(records.size() == 5);
  CHECK(records["t"]["error"].get<std::string>().find("'temperature' must be a finite number") != std::string::npos);
  CHECK(records["c"]["error"].get<std::string>().find("'cfg_scale' must be a finite number") != std::string::npos);
  CHECK(records["p"]["error"].get<std::string>().find("'top_p' must be a finite number in (0, 1]") != std::string::npos);
  CHECK(records["a"]["error"].get<std::string>().find("'alg_temp'") != std::string::npos);
  CHECK(records["t"]["line"] == 1);
  CHECK(records["ok"].contains("ids"));
  fs::remove(in);
  fs::remove(out);
}

TEST_CASE("bad command-line values in batch are usage errors before any work") {
  const std::string in = temp_file("batchcli.jsonl", "{\"prompt\": \"x\"}\n");
  const std::string out = in + ".out";
  fs::remove(out);
  const auto r = run_unmask("batch -i " + in + " -o " + out + " " + kGen + " --temperature inf");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("--temperature must be a finite number") != std::string::npos);
  CHECK(!fs::exists(out));
  fs::remove(in);
}

TEST_CASE("options that size allocations are bounded, and the error says the limit and why") {
  struct Case { std::string args, phrase; };
  const std::vector<Case> cases = {
      {kGen + " --threads 100000 x", "--threads: must be in [0, "},
      {kGen + " --threads -1 x", "--threads"},
      {"batch -i /dev/null -o /dev/null " + kGen + " --batch-size 100000", "--batch-size: must be in [0, 1024]"},
      {"bench " + kModel + " --batch-size 1,5000", "--batch-size: must be in [1, 1024]"},
      {"bench " + kModel + " --repeat 100000000", "--repeat: must be in [1, 10000]"},
      {"bench " + kModel + " --warmup 100000000", "--warmup: must be in [0, 1000]"},
      {"bench " + kModel + " --prompt-length 0", "--prompt-length"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.args);
    const auto r = run_unmask(c.args);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(c.phrase) != std::string::npos);
  }
  const auto t = run_unmask(kGen + " --threads 100000 x");
  CHECK(t.err.find("each thread allocates its own scratch") != std::string::npos);
}

TEST_CASE("a prompt read from a terminal gets a hint on stderr; a pipe does not") {
  if (std::system("command -v script > /dev/null 2>&1") != 0) {
    MESSAGE("skipped: no script(1) to give unmask a terminal");
    return;
  }
  // script(1) runs unmask on a pseudo-terminal and types the prompt, then Ctrl-D.
  const std::string out = shell("printf \"In the beginning\\n\\004\" | timeout 60 script -qec \"" +
                                std::string(UNMASK_BINARY) + " " + kGen + "\" /dev/null");
  CHECK(out.find("unmask: reading the prompt from stdin (end it with Ctrl-D)") != std::string::npos);
  CHECK(out.find("16 tokens in") != std::string::npos);  // and the run goes on
  CHECK(run_unmask(kGen, "In the beginning\n").err.find("reading the prompt") == std::string::npos);
}
