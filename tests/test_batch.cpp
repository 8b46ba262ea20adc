// unmask batch: JSONL parsing, error records, ragged-batch determinism, resume after a kill, shards.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "cli/batch.h"
#include "cli/jsonl.h"
#include "cli/progress.h"
#include "common.h"
#include "fixtures.h"

using namespace unmask;
using unmask::test::fixture;
using unmask::test::run_unmask;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct TempDir : unmask::test::TempDir {
  TempDir() : unmask::test::TempDir("unmask_batch") {}
};

void write_file(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<json> read_records(const std::string& path) {
  std::vector<json> out;
  for (const std::string& line : split_lines(read_file(path))) out.push_back(json::parse(line));
  return out;
}

// id -> the record without its timing, which differs run to run.
std::map<std::string, json> by_id(const std::vector<json>& records) {
  std::map<std::string, json> out;
  for (json r : records) {
    if (r.contains("stats")) {
      r["stats"].erase("seconds");
      r["stats"].erase("tokens_per_second");
    }
    out[record_key(r["id"], r.value("line", 0))] = r;
  }
  return out;
}

const std::string kModel = "-m " + fixture("tiny-f32-gqa") + " --threads 1 ";

const char* kPrompts[] = {"In the beginning", "And God said", "Let there be light", "the earth",
                          "and the evening and the morning", "waters", "God saw", "heaven"};

// `n` valid lines of varied lengths and settings (ids "r0", "r1", ...).
std::string valid_lines(int n, int gen_length = 16) {
  std::string text;
  for (int i = 0; i < n; i++) {
    json j;
    j["id"] = "r" + std::to_string(i);
    j["prompt"] = kPrompts[i % 8];
    if (i % 3 == 1) j["gen_length"] = gen_length / 2;
    if (i % 4 == 2) {
      j["temperature"] = 0.7;
      j["seed"] = i;
    }
    if (i % 5 == 3) j["threshold"] = 0.5;
    text += j.dump() + "\n";
  }
  return text;
}

}  // namespace

TEST_CASE("batch lines parse into requests or precise errors") {
  BatchLine l = parse_batch_line(R"({"prompt": "hi", "id": "a", "gen_length": 8, "threshold": null})", 4);
  CHECK(l.error.empty());
  CHECK(l.id == "a");
  CHECK(l.prompt == "hi");
  CHECK(*l.overrides.gen_length == 8);
  CHECK(l.overrides.threshold.has_value());
  CHECK(!l.overrides.threshold->has_value());
  CHECK(parse_batch_line(R"({"prompt": "hi"})", 9).id == 9);
  CHECK(parse_batch_line(R"({"prompt": "hi", "id": 12})", 9).id == 12);

  CHECK(parse_batch_line("{\"prompt\": ", 1).error.find("invalid JSON at line 1, column 12") == 0);
  CHECK(parse_batch_line("{\"prompt\": ", 1).id.is_null());  // keyed by its line, never a duplicate
  CHECK(parse_batch_line("[1]", 1).error.find("not a JSON object") == 0);
  CHECK(parse_batch_line(R"({"id": 3})", 1).error.find("missing 'prompt'") == 0);
  CHECK(parse_batch_line(R"({"prompt": 3})", 1).error == "'prompt' must be a string (got 3)");
  CHECK(parse_batch_line(R"({"prompt": "x", "prompt": "y"})", 1).error == "key 'prompt' appears twice");
  CHECK(parse_batch_line(R"({"messages": [{"role": "bogus", "content": "x"}]})", 1).error.find("'role' must be") != std::string::npos);
  CHECK(parse_batch_line(R"({"messages": [{"role": "user", "content": "x", "name": "a"}]})", 1).error.find("no other key") != std::string::npos);
  CHECK(parse_batch_line(R"({"messages": []})", 1).error == "'messages' must be a non-empty array (got an empty array)");
  CHECK(parse_batch_line("{\"prompt\": \"a\xff\"}", 1).error.find("invalid JSON at line 1") == 0);
  CHECK(parse_batch_line(R"({"prompt": "x", "steps": 1.5})", 1).error.find("'steps' must be an integer") == 0);
  CHECK(parse_batch_line(R"({"prompt": "x", "seed": -1})", 1).error.find("'seed'") == 0);
  CHECK(parse_batch_line(R"({"prompt": "x", "id": 1.5})", 1).error.find("'id' must be") == 0);
  CHECK(parse_batch_line(R"({"prompt": "x", "colour": 1})", 1).error.find("unknown key 'colour'") == 0);
  CHECK(parse_batch_line(R"({"prompt": "x", "messages": []})", 1).error.find("either") != std::string::npos);
  CHECK(parse_batch_line(R"({"messages": [{"role": "user"}]})", 1).error.find("'content'") != std::string::npos);

  GenerationOptions base;
  base.gen_length = 64;
  const GenerationOptions o = apply_overrides(base, l.overrides);
  CHECK(*o.gen_length == 8);
  CHECK(!o.threshold.has_value());
}

TEST_CASE("an output file being resumed: complete records, a torn last line, damage elsewhere") {
  TempDir dir;
  const std::string path = dir / "out.jsonl";
  write_file(path, "{\"id\":1,\"text\":\"a\"}\n{\"id\":\"b\",\"error\":\"x\"}\n{\"id\":3,\"te");
  ExistingOutput e = read_existing_output(path);
  CHECK(e.torn);
  CHECK(e.ids.size() == 2);
  CHECK(e.ids.at("1") == false);
  CHECK(e.ids.at("\"b\"") == true);
  CHECK(e.good_bytes == read_file(path).find("{\"id\":3"));
  // A complete-looking but unterminated last line was still cut off mid-write.
  write_file(path, "{\"id\":1}\n{\"id\":2}");
  CHECK(read_existing_output(path).torn);
  write_file(path, "{\"id\":1}\n\n{\"id\":2}\n");
  CHECK(!read_existing_output(path).torn);
  CHECK(read_existing_output(path).ids.size() == 2);
  write_file(path, "{\"id\":1}\ngarbage\n{\"id\":2}\n");
  CHECK_THROWS_AS(read_existing_output(path), Error);
  CHECK(read_existing_output(dir / "missing.jsonl").ids.empty());
}

TEST_CASE("shard, batch-size and progress helpers") {
  CHECK(parse_shard("0/1") == std::pair<int, int>(0, 1));
  CHECK(parse_shard("3/4") == std::pair<int, int>(3, 4));
  for (const char* bad : {"4/4", "-1/4", "1/0", "1", "a/b", "1/2x", ""}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(parse_shard(bad), Error);
  }
  CHECK(default_batch_size("cpu", 100) == 8);
  CHECK(default_batch_size("cpu", 4096) == 2);
  CHECK(default_batch_size("cuda", 100) == 64);
  CHECK(format_duration(62) == "1:02");
  CHECK(format_duration(3723) == "1:02:03");
  CHECK(format_duration(-1) == "?");
  CHECK(progress_text(3, 12, 45.25, 30, 8) == "[##------] 3/12 done  45.2 tok/s  ETA 0:30");
  CHECK(progress_text(0, 5, 0, -1, 0) == "0/5 done  0.0 tok/s  ETA ?");
}

TEST_CASE("batch writes one record per line, errors with their line numbers, exit 4") {
  TempDir dir;
  std::string text;
  std::map<int, std::string> bad;  // line -> start of the expected error
  int line = 0;
  auto add = [&](const std::string& s) {
    text += s + "\n";
    line++;
  };
  for (int i = 0; i < 30; i++) {
    switch (i) {
      case 3: add("{\"prompt\": \"unterminated"); bad[line] = "invalid JSON"; break;
      case 7: add("{\"id\": 77}"); bad[line] = "missing 'prompt'"; break;
      case 11: add("{\"prompt\": [\"a\"]}"); bad[line] = "'prompt' must be a string"; break;
      case 14: add(""); break;  // blank: skipped silently
      case 16: add("{\"prompt\": \"x\", \"gen_length\": \"8\"}"); bad[line] = "'gen_length' must be an integer"; break;
      case 19: add("{\"prompt\": \"x\", \"temprature\": 1}"); bad[line] = "unknown key 'temprature'"; break;
      case 23: {
        std::string long_prompt;
        for (int k = 0; k < 40; k++) long_prompt += "and the light ";
        add(json({{"prompt", long_prompt}}).dump());
        bad[line] = "prompt (";
        break;
      }
      case 26: add("{\"prompt\": \"x\", \"steps\": 5}"); bad[line] = "'steps' 5 is not divisible"; break;
      case 28: add("17"); bad[line] = "not a JSON object"; break;
      default: add(json({{"prompt", kPrompts[i % 8]}}).dump());
    }
  }
  write_file(dir / "in.jsonl", text);
  const auto r = run_unmask("batch " + kModel + "--gen-length 8 --block-length 4 -i " + (dir / "in.jsonl") +
                            " -o " + (dir / "out.jsonl"));
  CHECK(r.exit_code == 4);
  CHECK(r.err.find("29 requests (21 ok, 8 failed)") != std::string::npos);
  const auto records = read_records(dir / "out.jsonl");
  CHECK(records.size() == 29);
  int errors = 0;
  std::set<int> lines_seen;
  for (const json& rec : records) {
    const int at = rec["line"].get<int>();
    CHECK(lines_seen.insert(at).second);
    CAPTURE(rec.dump());
    if (rec.contains("error")) {
      errors++;
      REQUIRE(bad.count(at) == 1);
      CHECK(rec["error"].get<std::string>().find(bad[at]) != std::string::npos);
      // Lines whose id cannot be read (not JSON, not an object) carry id null.
      const bool unreadable = rec["error"].get<std::string>().find("invalid JSON") == 0 ||
                              rec["error"].get<std::string>().find("not a JSON object") == 0;
      CHECK(rec["id"] == (at == 8 ? json(77) : unreadable ? json(nullptr) : json(at)));
    } else {
      CHECK(bad.count(at) == 0);
      CHECK(rec["id"] == at);
      CHECK(rec["ids"].size() == 8);
      CHECK(rec["prompt_tokens"].get<int>() > 0);
      CHECK(rec["stats"]["steps"].get<int>() > 0);
      CHECK(rec["text"].is_string());
    }
  }
  CHECK(errors == 8);
  CHECK(lines_seen.count(15) == 0);  // the blank line
}

TEST_CASE("batch results do not depend on the batch size, also through stdin and stdout") {
  TempDir dir;
  write_file(dir / "in.jsonl", valid_lines(20));
  const std::string common = "batch " + kModel + "--gen-length 16 --block-length 8 -i " + (dir / "in.jsonl");
  const auto one = run_unmask(common + " -o " + (dir / "one.jsonl") + " --batch-size 1");
  const auto seven = run_unmask(common + " -o " + (dir / "seven.jsonl") + " --batch-size 7");
  REQUIRE(one.exit_code == 0);
  REQUIRE(seven.exit_code == 0);
  const auto a = by_id(read_records(dir / "one.jsonl"));
  const auto b = by_id(read_records(dir / "seven.jsonl"));
  CHECK(a.size() == 20);
  CHECK(a == b);
  // Pipes: -i - and -o -, records on stdout only.
  const auto piped = run_unmask("batch " + kModel + "--gen-length 16 --block-length 8 -q -i - -o -",
                                valid_lines(20));
  CHECK(piped.exit_code == 0);
  CHECK(piped.err.empty());
  std::vector<json> records;
  for (const std::string& l : split_lines(piped.out)) records.push_back(json::parse(l));
  CHECK(by_id(records) == a);
}

TEST_CASE("batch refuses to overwrite, rejects duplicate ids before any work") {
  TempDir dir;
  write_file(dir / "in.jsonl", "{\"prompt\": \"a\", \"id\": \"k\"}\n{\"prompt\": \"b\"}\n{\"prompt\": \"c\", \"id\": \"k\"}\n");
  auto r = run_unmask("batch " + kModel + "-i " + (dir / "in.jsonl") + " -o " + (dir / "out.jsonl"));
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("duplicate id k on lines 1 and 3") != std::string::npos);
  CHECK(!fs::exists(dir / "out.jsonl"));

  write_file(dir / "in.jsonl", "{\"prompt\": \"a\"}\n");
  write_file(dir / "out.jsonl", "precious\n");
  r = run_unmask("batch " + kModel + "-i " + (dir / "in.jsonl") + " -o " + (dir / "out.jsonl"));
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("use --resume or remove it") != std::string::npos);
  CHECK(read_file(dir / "out.jsonl") == "precious\n");

  r = run_unmask("batch " + kModel + "-i " + (dir / "missing.jsonl") + " -o " + (dir / "o2.jsonl"));
  CHECK(r.exit_code == 3);
  r = run_unmask("batch " + kModel + "--shard 2/2 -i " + (dir / "in.jsonl") + " -o " + (dir / "o3.jsonl"));
  CHECK(r.exit_code == 2);
}

TEST_CASE("shards K/N partition the lines") {
  TempDir dir;
  std::string text = valid_lines(10, 8);
  text += "not json\n\n";  // line 11 (an error record) and a blank line 12
  text += json({{"prompt", "x"}, {"id", "last"}}).dump() + "\n";
  write_file(dir / "in.jsonl", text);
  std::multiset<int> lines;
  for (int k = 0; k < 3; k++) {
    const std::string out = dir / ("s" + std::to_string(k) + ".jsonl");
    const auto r = run_unmask("batch " + kModel + "--gen-length 8 --shard " + std::to_string(k) +
                              "/3 -i " + (dir / "in.jsonl") + " -o " + out);
    CHECK(r.exit_code == (k == 10 % 3 ? 4 : 0));  // line 11 has index 10
    for (const json& rec : read_records(out)) {
      CHECK((rec["line"].get<int>() - 1) % 3 == k);
      lines.insert(rec["line"].get<int>());
    }
  }
  CHECK(lines == std::multiset<int>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13});
}

TEST_CASE("resume after a torn last line completes the output exactly once") {
  TempDir dir;
  write_file(dir / "in.jsonl", valid_lines(16, 8) + "{\"prompt\": 1}\n");
  const std::string common = "batch " + kModel + "--gen-length 8 -i " + (dir / "in.jsonl") + " -o ";
  REQUIRE(run_unmask(common + (dir / "full.jsonl")).exit_code == 4);
  const std::string full = read_file(dir / "full.jsonl");
  // The first 6 records, then half of the 7th as a crash would leave it.
  size_t cut = 0;
  for (int i = 0; i < 6; i++) cut = full.find('\n', cut) + 1;
  write_file(dir / "part.jsonl", full.substr(0, cut + 20));
  const auto r = run_unmask(common + (dir / "part.jsonl") + " --resume");
  CHECK(r.exit_code == 4);  // the bad line is still a failed record
  CHECK(r.err.find("dropped a torn last line") != std::string::npos);
  CHECK(r.err.find("6 already in") != std::string::npos);
  const auto records = read_records(dir / "part.jsonl");
  CHECK(records.size() == 17);
  CHECK(by_id(records) == by_id(read_records(dir / "full.jsonl")));
  // Resuming a complete output runs nothing and keeps the exit code of its records.
  const auto again = run_unmask(common + (dir / "part.jsonl") + " --resume");
  CHECK(again.exit_code == 4);
  CHECK(read_records(dir / "part.jsonl").size() == 17);
}

namespace {
// Starts `unmask args...` in the background with stdio to /dev/null; returns its pid.
pid_t spawn_unmask(const std::vector<std::string>& args) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(UNMASK_BINARY));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    // note: dup2, not freopen: freopen would flush the parent's buffered output a second time.
    const int null_fd = open("/dev/null", O_RDWR);
    for (int fd = 0; fd < 3; fd++) dup2(null_fd, fd);
    execv(UNMASK_BINARY, argv.data());
    _exit(127);
  }
  return pid;
}

size_t count_lines(const std::string& path) {
  const std::string text = read_file(path);
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

// Waits until `path` holds at least `lines` lines (or the process ended); returns whether it did.
bool wait_for_lines(pid_t pid, const std::string& path, size_t lines) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (count_lines(path) >= lines) return true;
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}
}  // namespace

TEST_CASE("batch killed half-way (SIGKILL, SIGTERM) resumes to the uninterrupted result") {
  TempDir dir;
  const int n = 240;
  std::string text = valid_lines(n, 32);
  for (int i = 0; i < 6; i++) text.insert(text.find('\n', 1000 * i) + 1, "{broken\n");
  write_file(dir / "in.jsonl", text);
  const std::vector<std::string> args = {"batch", "-m", fixture("tiny-f32-gqa"), "--threads", "1",
                                         "--gen-length", "32", "--block-length", "8", "-q",
                                         "-i", dir / "in.jsonl", "-o"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = args;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  // Reference: uninterrupted, batch size 3.
  const pid_t ref = spawn_unmask(with({dir / "ref.jsonl", "--batch-size", "3"}));
  int status = 0;
  waitpid(ref, &status, 0);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 4);
  const auto reference = by_id(read_records(dir / "ref.jsonl"));
  REQUIRE(reference.size() == static_cast<size_t>(n + 6));

  // SIGKILL once a tenth of the records exist: no handler runs, the last line may be torn.
  const std::string out = dir / "out.jsonl";
  pid_t pid = spawn_unmask(with({out}));
  const bool reached = wait_for_lines(pid, out, 25);
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  REQUIRE(reached);
  CHECK(WIFSIGNALED(status));
  const size_t after_kill = count_lines(out);
  CHECK(after_kill < reference.size());

  // SIGTERM during the resumed run: finishes its records, exits 130.
  pid = spawn_unmask(with({out, "--resume"}));
  const bool reached2 = wait_for_lines(pid, out, after_kill + 25);
  kill(pid, SIGTERM);
  waitpid(pid, &status, 0);
  REQUIRE(reached2);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  const std::string after_term = read_file(out);
  CHECK((after_term.empty() || after_term.back() == '\n'));
  CHECK(count_lines(out) < reference.size());

  // The rest, with another batch size: exactly one record per id, identical to the reference.
  const pid_t last = spawn_unmask(with({out, "--resume", "--batch-size", "5"}));
  waitpid(last, &status, 0);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 4);
  const auto records = read_records(out);
  CHECK(records.size() == reference.size());
  CHECK(by_id(records) == reference);
}
