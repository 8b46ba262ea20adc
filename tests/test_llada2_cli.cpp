// LLaDA2 through the real binary and the server: generate (block cache on and off, --chat, the
// editing presets, --visual, --stream), unmask batch with mixed block lengths and LLaDA2.1 lines,
// per-line errors naming the key, and /v1/completions answering as the CLI does. The ids are
// scripts/reference_moe.py's (tests/fixtures/moe.json).
#include <doctest/doctest.h>
#include <httplib.h>

#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cli/jsonl.h"
#include "cli/serve_http.h"
#include "decode/session.h"
#include "fixtures.h"

using unmask::test::fixture;
using unmask::test::load_json;
using unmask::test::run_unmask;
using json = nlohmann::json;

namespace {

const std::string kLlada2 = "-m " + fixture("tiny-llada2") + " --threads 1 ";

const json& moe() {
  static const json j = load_json(fixture("moe.json"));
  return j;
}

const json& generate_case(const std::string& name) {
  for (const json& c : moe()["generate"])
    if (c["name"] == name) return c;
  FAIL("no moe.json generate case " << name);
  static const json none;
  return none;
}

// The answer cut after its first EOS (inclusive), as the references return it.
json cut_after_eos(const json& ids) {
  const int32_t eos = moe()["models"]["tiny-llada2"].value("eos_id", 400);
  json out = json::array();
  for (const json& id : ids) {
    out.push_back(id);
    if (id.get<int32_t>() == eos) break;
  }
  return out;
}

// A shell-quoted word.
std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The generate options of a moe.json case (LLaDA2.0's loop unless it has an editing threshold).
std::string options_of(const json& c) {
  std::string o = "--gen-length " + std::to_string(c["gen_length"].get<int>()) + " --steps " +
                  std::to_string(c["steps"].get<int>()) + " --block-length " +
                  std::to_string(c["block_length"].get<int>()) + " --threshold " + c["threshold"].dump();
  if (!c["editing_threshold"].is_null())
    o += " --editing-threshold " + c["editing_threshold"].dump() + " --max-post-steps " +
         std::to_string(c["max_post_steps"].get<int>());
  if (c["temperature"].get<double>() > 0)
    o += " --temperature " + c["temperature"].dump() + " --top-k " + c["top_k"].dump() + " --top-p " +
         c["top_p"].dump() + " --seed " + c["seed"].dump();
  return o;
}

json run_json(const std::string& args) {
  const auto r = run_unmask(kLlada2 + "--format json -q " + args);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return json::parse(r.out);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A server on an ephemeral loopback port, in this process, serving tiny-llada2.
struct Llada2Server {
  unmask::ApiServer server;
  int port;
  static unmask::ServeOptions options() {
    unmask::ServeOptions o;
    o.port = 0;
    o.common.quiet = true;
    o.alias = "tiny-llada2";
    return o;
  }
  Llada2Server() : server(options()), port(server.bind()) {
    server.start();
    server.load(unmask::open_session(fixture("tiny-llada2"), "cpu", 1));
  }
  std::pair<int, json> post(const std::string& path, const std::string& body) const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60, 0);
    auto res = c.Post(path.c_str(), body, "application/json");
    REQUIRE(res);
    return {res->status, json::parse(res->body, nullptr, false)};
  }
};

}  // namespace

TEST_CASE("llada2 cli: generate gives the reference ids, with the block cache and without") {
  const json& c = generate_case("l20_b4_s4");
  REQUIRE(c["prompt_text"] == "In the beginning");
  const std::string args = "--gen-length 12 --block-length 4 --steps 4 'In the beginning'";
  const json cached = run_json(args);
  CHECK(cached["prompt_ids"] == c["prompt_ids"]);
  CHECK(cut_after_eos(cached["ids"]) == c["expected_ids"]);
  CHECK(cached["ids"].size() == 12);
  CHECK(cached["settings"]["alg"] == "llada2");
  CHECK(cached["settings"]["cache"] == "block");
  CHECK(cached["settings"]["block_length"] == 4);
  CHECK(cached["settings"]["threshold"].get<double>() == doctest::Approx(0.95));
  CHECK(cached["settings"]["editing_threshold"].is_null());
  CHECK(cached["stats"]["forward_passes"] == c["forwards"]);
  CHECK(cached["stats"]["cached_steps"].get<int>() > 0);

  const json uncached = run_json("--cache none " + args);
  CHECK(uncached["ids"] == cached["ids"]);
  CHECK(uncached["text"] == cached["text"]);
  CHECK(uncached["settings"]["cache"] == "none");
  CHECK(uncached["stats"]["cached_steps"] == 0);

  // The text form prints the JSON's text.
  const auto plain = run_unmask(kLlada2 + "-q " + args);
  REQUIRE(plain.exit_code == 0);
  CHECK(plain.out == cached["text"].get<std::string>() + "\n");
}

TEST_CASE("llada2 cli: --chat renders the role-tag template and reproduces the reference") {
  for (const char* name : {"l20_chat_system", "l21_chat_user_et05"}) {
    const json& c = generate_case(name);
    CAPTURE(name);
    std::string args = "--chat " + options_of(c);
    if (!c["chat"]["system"].is_null()) args += " --system " + quoted(c["chat"]["system"].get<std::string>());
    const json j = run_json(args + " " + quoted(c["chat"]["user"].get<std::string>()));
    CHECK(j["prompt_ids"] == c["prompt_ids"]);
    CHECK(cut_after_eos(j["ids"]) == c["expected_ids"]);
  }
}

TEST_CASE("llada2 cli: the editing presets are LLaDA2.1's model-card modes") {
  // l21_s_mode_t05_et00 is the speed mode (0.5 / 0.0), l21_q_mode_t07_et05 the quality mode.
  for (const auto& [name, preset] : std::vector<std::pair<std::string, std::string>>{
           {"l21_s_mode_t05_et00", "speed"}, {"l21_q_mode_t07_et05", "quality"}}) {
    const json& c = generate_case(name);
    CAPTURE(name);
    const json j = run_json("--editing-preset " + preset + " --gen-length " + c["gen_length"].dump() + " --steps " +
                            c["steps"].dump() + " --block-length " + c["block_length"].dump() + " --max-post-steps " +
                            c["max_post_steps"].dump() + " " + quoted(c["prompt_text"].get<std::string>()));
    CHECK(j["prompt_ids"] == c["prompt_ids"]);
    CHECK(cut_after_eos(j["ids"]) == c["expected_ids"]);
    CHECK(j["settings"]["threshold"].get<double>() == doctest::Approx(c["threshold"].get<double>()));
    CHECK(j["settings"]["editing_threshold"].get<double>() == doctest::Approx(c["editing_threshold"].get<double>()));
    CHECK(j["stats"]["edits"] == c["edits"]);
  }
  // A preset, --max-post-steps without editing, a cache or --alg llada on LLaDA2: usage errors.
  for (const auto& [args, says] : std::vector<std::pair<std::string, std::string>>{
           {"--editing-preset fast", "--editing-preset"},
           {"--max-post-steps 3", "--max-post-steps applies to LLaDA2.1's editing loop"},
           {"--cache dual", "--cache dual does not apply to LLaDA2's loop"},
           {"--alg llada", "--alg llada does not fit this block-diffusion model"},
           {"--editing-threshold 1.5", "--editing-threshold must be a finite number in [0, 1]"}}) {
    CAPTURE(args);
    const auto r = run_unmask(kLlada2 + args + " 'In the beginning'");
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(says) != std::string::npos);
  }
  const auto moe = run_unmask("-m " + fixture("tiny-llada-moe") + " --editing-preset speed 'In the beginning'");
  CHECK(moe.exit_code == 2);
  CHECK(moe.err.find("--editing-preset applies to --alg llada2") != std::string::npos);
}

TEST_CASE("llada2 cli: --visual draws the canvas on a terminal and prints the plain run's text") {
  const std::string args = "--gen-length 12 --block-length 4 --steps 4 -q";
  const auto plain = run_unmask(kLlada2 + args + " 'In the beginning'");
  REQUIRE(plain.exit_code == 0);
  // Not a terminal: the plain output.
  const auto piped = run_unmask(kLlada2 + "--visual " + args + " 'In the beginning'");
  CHECK(piped.exit_code == 0);
  CHECK(piped.out == plain.out);
  // On a terminal (stdout and stderr both): the frames, then the text.
  const auto tty = unmask::test::run_unmask_on_tty({"-m", fixture("tiny-llada2"), "--threads", "1", "--visual", "--gen-length",
                                      "12", "--block-length", "4", "--steps", "4", "-q", "In the beginning"});
  CHECK(tty.exit_code == 0);
  const std::string& out = tty.out;
  // The terminal turns "\n" into "\r\n".
  std::string expected;
  for (char c : plain.out) expected += c == '\n' ? std::string("\r\n") : std::string(1, c);
  REQUIRE(out.size() > expected.size());  // the frames came first
  CHECK(out.compare(out.size() - expected.size(), expected.size(), expected) == 0);
}

TEST_CASE("llada2 cli: --stream prints the plain run's text, LLaDA2.1's edits included") {
  for (const char* name : {"l20_b4_s4", "l20_eos_block_stop_b4", "l20_mask_left", "l21_et09", "l21_s_mode_t05_et00",
                           "l21_t08_topp09"}) {
    const json& c = generate_case(name);
    CAPTURE(name);
    const std::string args = options_of(c) + " -q " + quoted(c["prompt_text"].get<std::string>());
    const auto plain = run_unmask(kLlada2 + args);
    const auto streamed = run_unmask(kLlada2 + "--stream " + args);
    REQUIRE(plain.exit_code == 0);
    REQUIRE(streamed.exit_code == 0);
    CHECK(streamed.out == plain.out);
  }
}

TEST_CASE("llada2 cli: a batch with mixed block lengths and LLaDA2.1 lines gives each line its ids alone") {
  unmask::test::TempDir dir("unmask_llada2_batch");
  std::string lines;
  std::map<std::string, const json*> cases;
  std::set<int> block_lengths;
  int editing = 0;
  for (const json& c : moe()["generate"]) {
    if (c["model"] != "tiny-llada2" || !c["chat"].is_null()) continue;
    json line;
    const std::string id = c["name"].get<std::string>();
    line["id"] = id;
    line["prompt"] = c["prompt_text"];
    for (const char* key : {"gen_length", "steps", "block_length", "threshold", "temperature", "top_k", "top_p", "seed"})
      line[key] = c[key];
    if (!c["editing_threshold"].is_null()) {
      line["editing_threshold"] = c["editing_threshold"];
      line["max_post_steps"] = c["max_post_steps"];
      editing++;
    }
    lines += line.dump() + "\n";
    cases[id] = &c;
    block_lengths.insert(c["block_length"].get<int>());
  }
  REQUIRE(editing >= 3);
  REQUIRE(block_lengths.size() >= 3);
  std::ofstream(dir / "in.jsonl") << lines;
  const std::string base = "batch " + kLlada2 + "-q -i " + (dir / "in.jsonl");
  const auto together = run_unmask(base + " -o " + (dir / "together.jsonl"));
  INFO(together.err);
  REQUIRE(together.exit_code == 0);
  const auto alone = run_unmask(base + " --batch-size 1 -o " + (dir / "alone.jsonl"));
  REQUIRE(alone.exit_code == 0);
  std::map<std::string, json> one_by_one;
  for (const std::string& l : unmask::split_lines(read_file(dir / "alone.jsonl"))) {
    const json r = json::parse(l);
    one_by_one[r["id"].get<std::string>()] = r;
  }
  size_t seen = 0;
  for (const std::string& l : unmask::split_lines(read_file(dir / "together.jsonl"))) {
    const json r = json::parse(l);
    const std::string id = r["id"].get<std::string>();
    CAPTURE(id);
    REQUIRE(cases.count(id));
    CHECK_FALSE(r.contains("error"));
    CHECK(r["filled_prompt_ids"] == (*cases[id])["prompt_ids"]);  // no masks in these prompts
    CHECK(cut_after_eos(r["ids"]) == (*cases[id])["expected_ids"]);
    CHECK(r["ids"] == one_by_one[id]["ids"]);
    CHECK(r["settings"]["alg"] == "llada2");
    CHECK(r["settings"]["cache"] == "block");
    CHECK(r["settings"]["block_length"] == (*cases[id])["block_length"]);
    if (!(*cases[id])["editing_threshold"].is_null())
      CHECK(r["settings"]["editing_threshold"].get<double>() ==
            doctest::Approx((*cases[id])["editing_threshold"].get<double>()));
    seen++;
  }
  CHECK(seen == cases.size());
}

TEST_CASE("llada2 cli: a batch line with a bad LLaDA2 value gets an error naming the key; the others run") {
  unmask::test::TempDir dir("unmask_llada2_batch_errors");
  const std::map<std::string, std::string> errors = {
      {"type_et", R"("editing_threshold": "high")"},
      {"range_et", R"("editing_threshold": 1.5)"},
      {"type_mps", R"("editing_threshold": 0.5, "max_post_steps": 2.5)"},
      {"range_mps", R"("editing_threshold": 0.5, "max_post_steps": -1)"},
      {"alone_mps", R"("max_post_steps": 3)"},
      {"type_preset", R"("editing_preset": 1)"},
      {"name_preset", R"("editing_preset": "fast")"},
      {"alg", R"("alg": "llada")"},
      {"preset_alg", R"("editing_preset": "speed", "alg": "llada")"},
  };
  const std::map<std::string, std::string> says = {
      {"type_et", "'editing_threshold' must be a number (got a string)"},
      {"range_et", "'editing_threshold' must be a finite number in [0, 1]"},
      {"type_mps", "'max_post_steps' must be an integer (got 2.5)"},
      {"range_mps", "'max_post_steps' must be in [0, "},
      {"alone_mps", "'max_post_steps' applies to LLaDA2.1's editing loop: give 'editing_threshold' too"},
      {"type_preset", "'editing_preset' must be \"quality\" or \"speed\" (got 1)"},
      {"name_preset", "'editing_preset' must be \"quality\" or \"speed\" (got \"fast\")"},
      {"alg", "'alg' llada does not fit this block-diffusion model"},
      {"preset_alg", "'editing_preset' applies to 'alg' llada2"},
  };
  std::string lines;
  for (const auto& [id, fields] : errors)
    lines += R"({"id": ")" + id + R"(", "prompt": "In the beginning", "gen_length": 8, "block_length": 4, )" + fields + "}\n";
  lines += R"({"id": "good", "prompt": "In the beginning", "gen_length": 12, "block_length": 4, "steps": 4})" "\n";
  lines += R"({"id": "preset", "prompt": "And God remembered Noah", "gen_length": 12, "block_length": 4, "steps": 4, "editing_preset": "speed", "max_post_steps": 2})" "\n";
  lines += R"({"id": "unset", "prompt": "In the beginning", "gen_length": 12, "block_length": 4, "steps": 4, "editing_threshold": null, "editing_preset": null})" "\n";
  std::ofstream(dir / "in.jsonl") << lines;
  const auto r = run_unmask("batch " + kLlada2 + "-q -i " + (dir / "in.jsonl") + " -o " + (dir / "out.jsonl"));
  CHECK(r.exit_code == 4);  // some records failed
  std::map<std::string, json> by;
  for (const std::string& l : unmask::split_lines(read_file(dir / "out.jsonl"))) {
    const json rec = json::parse(l);
    by[rec["id"].get<std::string>()] = rec;
  }
  for (const auto& [id, phrase] : says) {
    CAPTURE(id);
    REQUIRE(by.count(id));
    REQUIRE(by[id].contains("error"));
    CHECK_MESSAGE(by[id]["error"].get<std::string>().find(phrase) != std::string::npos, by[id]["error"]);
  }
  REQUIRE(by.count("good"));
  CHECK(cut_after_eos(by["good"]["ids"]) == generate_case("l20_b4_s4")["expected_ids"]);
  REQUIRE(by.count("preset"));
  CHECK_FALSE(by["preset"].contains("error"));
  CHECK(cut_after_eos(by["preset"]["ids"]) == generate_case("l21_s_mode_t05_et00")["expected_ids"]);
  REQUIRE(by.count("unset"));
  CHECK(by["unset"]["settings"]["editing_threshold"].is_null());
  CHECK(by["unset"]["ids"] == by["good"]["ids"]);

  // The parser itself: the new keys are known, typed, and applied over the command line's.
  const unmask::BatchLine l = unmask::parse_batch_line(
      R"({"prompt": "x", "editing_threshold": 0.25, "max_post_steps": 7, "editing_preset": "quality"})", 1);
  REQUIRE(l.error.empty());
  unmask::GenerationOptions base;
  base.editing_threshold = 0.9f;
  const unmask::GenerationOptions o = unmask::apply_overrides(base, l.overrides);
  CHECK(*o.editing_threshold == 0.25f);
  CHECK(*o.max_post_steps == 7);
  CHECK(o.editing_preset == "quality");
  const unmask::BatchLine off = unmask::parse_batch_line(R"({"prompt": "x", "editing_threshold": null})", 1);
  REQUIRE(off.error.empty());
  CHECK_FALSE(unmask::apply_overrides(base, off.overrides).editing_threshold.has_value());
  const std::string unknown = unmask::parse_batch_line(R"({"prompt": "x", "editing": 1})", 1).error;
  for (const char* key : {"editing_threshold", "max_post_steps", "editing_preset"})
    CHECK(unknown.find(key) != std::string::npos);  // listed among the known keys
}

TEST_CASE("llada2 serve: a completion answers as the CLI does; LLaDA2 fields are checked by name") {
  Llada2Server s;
  struct Same {
    std::string fields, options, prompt;
  };
  const std::vector<Same> cases = {
      {R"("max_tokens": 12, "block_length": 4, "steps": 4)", "--gen-length 12 --block-length 4 --steps 4", "In the beginning"},
      {R"("max_tokens": 12, "block_length": 4, "steps": 4, "cache": "none")", "--gen-length 12 --block-length 4 --steps 4 --cache none",
       "In the beginning"},
      {R"("max_tokens": 12, "block_length": 4, "steps": 4, "cache": "block", "threshold": 0.5)",
       "--gen-length 12 --block-length 4 --steps 4 --threshold 0.5", "And God made the"},
      {R"("max_tokens": 12, "block_length": 4, "steps": 4, "editing_threshold": 0.9, "max_post_steps": 3)",
       "--gen-length 12 --block-length 4 --steps 4 --editing-threshold 0.9 --max-post-steps 3",
       "And Cain talked with Abel his brother"},
      {R"("max_tokens": 12, "block_length": 4, "steps": 4, "editing_preset": "speed", "max_post_steps": 2)",
       "--gen-length 12 --block-length 4 --steps 4 --editing-preset speed --max-post-steps 2", "And God remembered Noah"},
  };
  for (const Same& c : cases) {
    CAPTURE(c.fields);
    const auto [status, j] = s.post("/v1/completions", R"({"prompt": ")" + c.prompt + R"(", )" + c.fields + "}");
    INFO(j.dump());
    REQUIRE(status == 200);
    const json want = run_json(c.options + " " + quoted(c.prompt));
    CHECK(j["choices"][0]["text"] == want["text"]);
    CHECK(j["unmask"]["settings"] == want["settings"]);
    CHECK(j["unmask"]["settings"]["alg"] == "llada2");
  }
  // Streamed, LLaDA2.1's edits included: the chunks add up to the same text.
  {
    httplib::Client client("127.0.0.1", s.port);
    client.set_read_timeout(60, 0);
    auto res = client.Post("/v1/completions",
                           R"({"prompt": "And God remembered Noah", "max_tokens": 12, "block_length": 4, "steps": 4, )"
                           R"("editing_preset": "speed", "max_post_steps": 2, "stream": true})",
                           "application/json");
    REQUIRE(res);
    CHECK(res->status == 200);
    std::string text;
    size_t at = 0;
    while ((at = res->body.find("data: ", at)) != std::string::npos) {
      const size_t end = res->body.find("\n\n", at);
      const std::string event = res->body.substr(at + 6, end - at - 6);
      at = end;
      if (event == "[DONE]") break;
      const json chunk = json::parse(event);
      if (!chunk["choices"].empty()) text += chunk["choices"][0]["text"].get<std::string>();
    }
    const json want = run_json("--gen-length 12 --block-length 4 --steps 4 --editing-preset speed --max-post-steps 2 "
                               "'And God remembered Noah'");
    CHECK(text == want["text"]);
  }
  // Chat: the role-tag template, as --chat renders it.
  const json& chat = generate_case("l20_chat_system");
  const auto [cs, cj] = s.post("/v1/chat/completions",
                               json{{"messages", json::array({{{"role", "system"}, {"content", chat["chat"]["system"]}},
                                                              {{"role", "user"}, {"content", chat["chat"]["user"]}}})},
                                    {"max_tokens", 12},
                                    {"block_length", 8},
                                    {"steps", 6},
                                    {"threshold", 0.5}}
                                   .dump());
  REQUIRE(cs == 200);
  CHECK(cj["usage"]["prompt_tokens"] == chat["prompt_ids"].size());
  const json want = run_json("--chat " + options_of(chat) + " --system " + quoted(chat["chat"]["system"].get<std::string>()) +
                             " " + quoted(chat["chat"]["user"].get<std::string>()));
  CHECK(cj["choices"][0]["message"]["content"] == want["text"]);

  struct Bad {
    std::string fields, param, says;
  };
  const std::vector<Bad> bad = {
      {R"("editing_threshold": "high")", "editing_threshold", "'editing_threshold' must be a number (got a string)"},
      {R"("editing_threshold": 2)", "editing_threshold", "'editing_threshold' must be a finite number in [0, 1]"},
      {R"("editing_threshold": 0.5, "max_post_steps": 1.5)", "max_post_steps", "'max_post_steps' must be an integer"},
      {R"("editing_threshold": 0.5, "max_post_steps": -1)", "max_post_steps", "'max_post_steps' must be in [0, "},
      {R"("max_post_steps": 3)", "max_post_steps", "'max_post_steps' applies to LLaDA2.1's editing loop"},
      {R"("editing_preset": "fast")", "editing_preset", "'editing_preset' must be \"quality\" or \"speed\" (got \"fast\")"},
      {R"("editing_preset": true)", "editing_preset", "'editing_preset' must be a string"},
      {R"("cache": "dual")", "cache", "'cache' dual does not apply to LLaDA2's loop"},
      {R"("cache": "sideways")", "cache", "'cache': unknown mode 'sideways'"},
      {R"("alg": "llada")", "alg", "'alg' llada does not fit this block-diffusion model"},
      {R"("cfg_scale": 1.5)", "cfg_scale", "'cfg_scale' does not apply to LLaDA2's loop"},
      {R"("editing_preset": "speed", "alg": "llada")", "editing_preset", "'editing_preset' applies to 'alg' llada2"},
  };
  for (const Bad& b : bad) {
    CAPTURE(b.fields);
    const auto [status, j] = s.post("/v1/completions", R"({"prompt": "In the beginning", "max_tokens": 8, )" + b.fields + "}");
    CHECK(status == 400);
    REQUIRE(j.contains("error"));
    CHECK(j["error"]["param"] == b.param);
    CHECK_MESSAGE(j["error"]["message"].get<std::string>().find(b.says) != std::string::npos, j["error"]["message"]);
  }
}
