// unmask batch and its files: records that stand on their own, error records retried on --resume,
// input and output paths that are refused, streamed or explained, and a summary with its parts.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "cli/jsonl.h"
#include "fixtures.h"

using unmask::split_lines;
using unmask::test::fixture;
using unmask::test::run_unmask;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::string kBatch = "batch -m " + fixture("tiny-f32-gqa") + " --gen-length 8 --block-length 8 ";

struct Scratch : unmask::test::TempDir {
  Scratch() : unmask::test::TempDir("unmask_bfiles") {}
};

void write_file(const std::string& path, const std::string& text) { std::ofstream(path) << text; }
std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
std::vector<json> records_of(const std::string& text) {
  std::vector<json> out;
  for (const std::string& line : split_lines(text)) out.push_back(json::parse(line));
  return out;
}

}  // namespace

TEST_CASE("batch records carry their effective settings, and the prompt with --echo-prompt") {
  Scratch dir;
  write_file(dir / "in.jsonl",
             "{\"id\": \"a\", \"prompt\": \"In the beginning\", \"temperature\": 0.5, \"seed\": 3}\n"
             "{\"id\": \"b\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n"
             "{\"id\": \"c\", \"prompt\": \"And God said\", \"steps\": 4}\n");
  auto r = run_unmask(kBatch + "--echo-prompt -i " + (dir / "in.jsonl") + " -o " + (dir / "out.jsonl"));
  CHECK(r.exit_code == 4);  // b: the fixture has no chat template
  std::map<std::string, json> by;
  for (const json& rec : records_of(read_file(dir / "out.jsonl"))) by[rec["id"].get<std::string>()] = rec;
  REQUIRE(by.size() == 3);
  CHECK(by["a"]["prompt"] == "In the beginning");
  CHECK(by["a"]["settings"]["temperature"] == 0.5);
  CHECK(by["a"]["settings"]["seed"] == 3);
  CHECK(by["a"]["settings"]["gen_length"] == 8);
  CHECK(by["a"]["settings"]["block_length"] == 8);
  CHECK(by["c"]["settings"]["steps"] == 4);
  CHECK(by["c"]["settings"]["temperature"] == 0.0);
  CHECK(by["a"]["filled_prompt_ids"].is_array());
  CHECK(by["b"].contains("error"));
  // Without --echo-prompt the prompt stays out.
  r = run_unmask(kBatch + "-i " + (dir / "in.jsonl") + " -o " + (dir / "plain.jsonl"));
  for (const json& rec : records_of(read_file(dir / "plain.jsonl"))) CHECK(!rec.contains("prompt"));
}

TEST_CASE("--resume runs error records again and replaces them; results are kept") {
  Scratch dir;
  write_file(dir / "in.jsonl", "{\"id\": 1, \"prompt\": \"In the beginning\"}\n"
                               "{\"id\": 2, \"prompt\": \"And God said\", \"gen_length\": \"8\"}\n"
                               "{\"id\": 3, \"prompt\": \"And the earth\"}\n");
  const std::string run = kBatch + "-i " + (dir / "in.jsonl") + " -o " + (dir / "out.jsonl");
  REQUIRE(run_unmask(run).exit_code == 4);
  const auto before = records_of(read_file(dir / "out.jsonl"));
  REQUIRE(before.size() == 3);
  // The user fixes line 2 and resumes: it runs again; 1 and 3 are not rerun.
  write_file(dir / "in.jsonl", "{\"id\": 1, \"prompt\": \"In the beginning\"}\n"
                               "{\"id\": 2, \"prompt\": \"And God said\", \"gen_length\": 8}\n"
                               "{\"id\": 3, \"prompt\": \"And the earth\"}\n");
  const auto r = run_unmask(run + " --resume");
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("retrying 1 line(s) that ended in an error") != std::string::npos);
  CHECK(r.err.find("2 already in") != std::string::npos);
  const auto after = records_of(read_file(dir / "out.jsonl"));
  REQUIRE(after.size() == 3);
  std::map<int, json> by;
  for (const json& rec : after) by[rec["id"].get<int>()] = rec;
  CHECK(!by[2].contains("error"));
  CHECK(by[2].contains("ids"));
  for (const json& rec : before)
    if (rec["id"] != 2) CHECK(by[rec["id"].get<int>()]["ids"] == rec["ids"]);
  // Nothing left to do: a further resume writes nothing new.
  CHECK(run_unmask(run + " --resume").exit_code == 0);
  CHECK(records_of(read_file(dir / "out.jsonl")).size() == 3);
}

TEST_CASE("batch input and output paths: same file refused, devices streamed, reasons given") {
  Scratch dir;
  const std::string line = "{\"prompt\": \"In the beginning\"}\n";
  write_file(dir / "in.jsonl", line);
  // The same file for both: refused before any work, the input untouched.
  auto r = run_unmask(kBatch + "-i " + (dir / "in.jsonl") + " -o " + (dir / "in.jsonl"));
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("-i and -o name the same file") != std::string::npos);
  CHECK(read_file(dir / "in.jsonl") == line);
  r = run_unmask(kBatch + "-i " + (dir / "in.jsonl") + " -o " + dir.path.string() + "/./in.jsonl");
  CHECK(r.exit_code == 2);
  // Devices are written as streams.
  r = run_unmask(kBatch + "-i " + (dir / "in.jsonl") + " -o /dev/null");
  CHECK(r.exit_code == 0);
  r = run_unmask(kBatch + "-i " + (dir / "in.jsonl") + " -o /dev/stdout");
  CHECK(r.exit_code == 0);
  REQUIRE(records_of(r.out).size() == 1);
  CHECK(records_of(r.out)[0].contains("ids"));
  r = run_unmask(kBatch + "-i " + (dir / "in.jsonl") + " -o /dev/null --resume");
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("--resume needs a regular output file") != std::string::npos);
  // Reasons: a missing input, a missing output directory, a directory as output.
  r = run_unmask(kBatch + "-i " + (dir / "absent.jsonl") + " -o " + (dir / "o.jsonl"));
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("absent.jsonl: cannot read the input: no such file") != std::string::npos);
  r = run_unmask(kBatch + "-i " + (dir / "in.jsonl") + " -o " + (dir / "nodir/o.jsonl"));
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("cannot create the output: the directory " + (dir / "nodir") + " does not exist") !=
        std::string::npos);
  CHECK(r.err.find("note:") == std::string::npos);  // refused before the model loaded
  r = run_unmask(kBatch + "-i " + (dir / "in.jsonl") + " -o " + dir.path.string());
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("is a directory") != std::string::npos);
}

TEST_CASE("the batch summary gives the wall time and its parts") {
  Scratch dir;
  write_file(dir / "in.jsonl", "{\"prompt\": \"In the beginning\"}\n{\"prompt\": \"And God said\"}\n");
  const auto r = run_unmask(kBatch + "-i " + (dir / "in.jsonl") + " -o " + (dir / "o.jsonl"));
  CHECK(r.exit_code == 0);
  for (const char* part : {"s of generation", "wall ", "= read ", "+ load ", "+ tokenize ", "+ generate "})
    CHECK_MESSAGE(r.err.find(part) != std::string::npos, part);
}
