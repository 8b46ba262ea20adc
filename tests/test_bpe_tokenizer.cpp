// Byte-level BPE tokenizers against goldens from Hugging Face `tokenizers`
// (tests/fixtures/tokenizers/, scripts/make_tokenizer_fixtures.py), their load errors, and the
// loader's choice among the tokenizer files of a model directory.
#include <doctest/doctest.h>

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common.h"
#include "fixtures.h"
#include "tokenizer/tokenizer.h"

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string tokenizer_fixture(const std::string& name) { return unmask::test::fixture("tokenizers/" + name); }

std::vector<int32_t> ids_of(const json& j) { return j.get<std::vector<int32_t>>(); }

void check_golden(const std::string& name, const std::string& kind) {
  const std::string dir = tokenizer_fixture(name);
  const json g = unmask::test::load_json(dir + "/golden.json");
  auto tok = unmask::load_tokenizer(dir);
  CHECK(tok->kind() == kind);
  CHECK(tok->source().find(dir) != std::string::npos);
  CHECK(tok->vocab_size() == g["vocab_size"].get<int32_t>());
  for (const auto& [piece, id] : g["special_tokens"].items()) {
    INFO("special token ", piece);
    CHECK(tok->piece_to_id(piece) == id.get<int32_t>());
    CHECK(tok->piece(id.get<int32_t>()) == piece);
  }
  CHECK(tok->piece_to_id("no such piece in any vocab") == -1);

  // Guards against a truncated golden passing vacuously.
  REQUIRE(g["cases"].size() >= 50);
  size_t n_roundtrip = 0;
  for (const json& c : g["cases"]) {
    const std::string text = c["text"].get<std::string>();
    INFO("fixture ", name, ", text ", json(text).dump());
    const std::vector<int32_t> ids = tok->encode(text);
    CHECK(ids == ids_of(c["ids"]));
    CHECK(tok->decode(ids_of(c["ids"])) == c["decoded"].get<std::string>());
    if (c["roundtrip"].get<bool>()) {
      CHECK(tok->decode(ids) == text);
      n_roundtrip++;
    }
    // No post-processor: wrapping changes nothing.
    if (g["wrap_single"].is_null()) CHECK(tok->wrap_single(ids) == ids);
  }
  CHECK(n_roundtrip > 0);
  for (const json& c : g["decode_cases"]) {
    INFO("fixture ", name, ", decode ", c["ids"].dump());
    CHECK(tok->decode(ids_of(c["ids"])) == c["text"].get<std::string>());
  }
  if (!g["wrap_single"].is_null()) {
    const json& w = g["wrap_single"];
    CHECK(tok->wrap_single(tok->encode(w["text"].get<std::string>())) == ids_of(w["ids"]));
  }
}

// A fresh directory under the system temp dir, removed with the object.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() / ("unmask_tok_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string str() const { return path.string(); }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name, std::ios::binary) << text;
  }
  void copy(const std::string& from, const std::string& name) const { fs::copy_file(from, path / name); }
};

json gpt2_json() { return unmask::test::load_json(tokenizer_fixture("gpt2") + "/tokenizer.json"); }

// Loading `dir` fails with a bad-input Error whose message contains every phrase.
void check_load_error(const std::string& dir, const std::vector<std::string>& phrases) {
  try {
    unmask::load_tokenizer(dir);
    FAIL("loading ", dir, " should have failed");
  } catch (const unmask::Error& e) {
    const std::string what = e.what();
    INFO("message: ", what);
    CHECK(e.exit_code() == unmask::kExitBadInput);
    CHECK(what.find('\n') == std::string::npos);
    for (const std::string& p : phrases) CHECK(what.find(p) != std::string::npos);
  }
}

void check_json_error(const json& tokenizer_json, const std::vector<std::string>& phrases) {
  TempDir dir;
  dir.write("tokenizer.json", tokenizer_json.dump());
  std::vector<std::string> all = phrases;
  all.push_back(dir.str() + "/tokenizer.json: ");
  check_load_error(dir.str(), all);
}

}  // namespace

TEST_CASE("tokenizer: bpe goldens, GPT-2 style tokenizer.json") { check_golden("gpt2", "bpe (tokenizer.json)"); }
TEST_CASE("tokenizer: bpe goldens, Llama-3 / LLaDA style tokenizer.json") {
  check_golden("llama3", "bpe (tokenizer.json)");
}
TEST_CASE("tokenizer: bpe goldens, Qwen2 vocab.json + merges.txt") {
  check_golden("qwen2", "bpe (vocab.json + merges.txt)");
}
TEST_CASE("tokenizer: bpe goldens, Llama-2 style byte fallback") {
  check_golden("bytefallback", "bpe (tokenizer.json)");
}
TEST_CASE("tokenizer: bpe goldens, Metaspace with unk") { check_golden("metaspace", "bpe (tokenizer.json)"); }
TEST_CASE("tokenizer: bpe goldens, normalizers, split behaviors and added-token flags") {
  check_golden("mixed", "bpe (tokenizer.json)");
  check_golden("mixed2", "bpe (tokenizer.json)");
}

TEST_CASE("tokenizer: bpe specifics the goldens rely on") {
  auto llama = unmask::load_tokenizer(tokenizer_fixture("llama3"));
  // ignore_merges: a vocab word with no merge path is one id.
  const int32_t unmask_id = llama->piece_to_id("\xC4\xA0unmask");  // "Ġunmask"
  REQUIRE(unmask_id >= 0);
  CHECK(llama->encode(" unmask") == std::vector<int32_t>{unmask_id});
  const int32_t mask = llama->piece_to_id("<|mdm_mask|>");
  CHECK(llama->encode("<|mdm_mask|><|mdm_mask|>") == std::vector<int32_t>{mask, mask});
  CHECK(llama->wrap_single({}) == std::vector<int32_t>{llama->piece_to_id("<|startoftext|>")});
  // Invalid UTF-8 in the input is read as U+FFFD, never a crash.
  CHECK(llama->encode("a\xFF" "b") == llama->encode("a\xEF\xBF\xBD" "b"));
  // Unknown ids are skipped when decoding.
  CHECK(llama->decode({-5, 1 << 30}).empty());
  auto qwen = unmask::load_tokenizer(tokenizer_fixture("qwen2"));
  CHECK(qwen->piece_to_id("<|im_end|>") >= 0);
  CHECK(qwen->source().find("tokenizer_config.json") != std::string::npos);
}

TEST_CASE("tokenizer: load_tokenizer picks by the files present") {
  const std::string sp = unmask::test::fixture("tiny-f32-gqa/tokenizer.model");
  const std::string gpt2 = tokenizer_fixture("gpt2/tokenizer.json");
  const std::string qwen = tokenizer_fixture("qwen2");
  {
    TempDir dir;  // tokenizer.json beats tokenizer.model and vocab.json
    dir.copy(gpt2, "tokenizer.json");
    dir.copy(sp, "tokenizer.model");
    dir.copy(qwen + "/vocab.json", "vocab.json");
    dir.copy(qwen + "/merges.txt", "merges.txt");
    CHECK(unmask::load_tokenizer(dir.str())->kind() == "bpe (tokenizer.json)");
  }
  {
    TempDir dir;  // tokenizer.model beats vocab.json
    dir.copy(sp, "tokenizer.model");
    dir.copy(qwen + "/vocab.json", "vocab.json");
    dir.copy(qwen + "/merges.txt", "merges.txt");
    auto tok = unmask::load_tokenizer(dir.str());
    CHECK(tok->kind() == "sentencepiece");
    CHECK(tok->source() == dir.str() + "/tokenizer.model");
  }
  {
    TempDir dir;  // vocab.json + merges.txt alone; no tokenizer_config.json means no added tokens
    dir.copy(qwen + "/vocab.json", "vocab.json");
    dir.copy(qwen + "/merges.txt", "merges.txt");
    auto tok = unmask::load_tokenizer(dir.str());
    CHECK(tok->kind() == "bpe (vocab.json + merges.txt)");
    CHECK(tok->piece_to_id("<|im_end|>") == -1);
  }
  {
    TempDir dir;
    check_load_error(dir.str(), {dir.str() + ": no tokenizer found", "tokenizer.json", "tokenizer.model",
                                 "vocab.json + merges.txt"});
  }
}

TEST_CASE("tokenizer: bpe errors name the file and the component or key") {
  json j = gpt2_json();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  check_json_error(j, {"pre_tokenizer type 'Whitespace' is not supported (supported: ByteLevel"});

  j = gpt2_json();
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", {gpt2_json()["pre_tokenizer"], {{"type", "Punctuation"}}}}};
  check_json_error(j, {"pre_tokenizer.pretokenizers[1] type 'Punctuation' is not supported"});

  j = gpt2_json();
  j["normalizer"] = {{"type", "BertNormalizer"}};
  check_json_error(j, {"normalizer type 'BertNormalizer' is not supported (supported: NFC"});

  j = gpt2_json();
  j["decoder"] = {{"type", "WordPiece"}, {"prefix", "##"}};
  check_json_error(j, {"decoder type 'WordPiece' is not supported"});

  j = gpt2_json();
  j["post_processor"] = {{"type", "Mystery"}};
  check_json_error(j, {"post_processor type 'Mystery' is not supported"});

  j = gpt2_json();
  j["model"]["type"] = "WordPiece";
  check_json_error(j, {"model type 'WordPiece' is not supported (supported: BPE)"});

  j = gpt2_json();
  j["model"]["continuing_subword_prefix"] = "##";
  check_json_error(j, {"key 'model.continuing_subword_prefix'", "not supported"});

  j = gpt2_json();
  j["model"].erase("merges");
  check_json_error(j, {"missing key 'model.merges'"});

  j = gpt2_json();
  j["model"]["merges"][3] = json::array({"\xC4\xA0", "not-a-piece"});
  check_json_error(j, {"key 'model.merges[3]'", "'not-a-piece' is not in the vocab"});

  j = gpt2_json();
  j["model"]["merges"][0] = "one-piece-only";
  check_json_error(j, {"key 'model.merges[0]' must be two pieces separated by one space"});

  j = gpt2_json();
  j["model"]["vocab"]["x"] = -3;
  check_json_error(j, {"key 'model.vocab.x' must be an integer"});

  j = gpt2_json();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  check_json_error(j, {"regex '(unclosed' does not compile"});

  j = gpt2_json();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "x"}}}, {"behavior", "Sideways"}};
  check_json_error(j, {"key 'pre_tokenizer.behavior'", "'Sideways' is not a split behavior"});

  j = gpt2_json();
  j["added_tokens"][0].erase("content");
  check_json_error(j, {"missing key 'added_tokens[0].content'"});

  TempDir bad;
  bad.write("tokenizer.json", "{\"model\": {\"vocab\": {\"a\": 0},");
  check_load_error(bad.str(), {bad.str() + "/tokenizer.json: not valid JSON"});
}

TEST_CASE("tokenizer: vocab.json + merges.txt errors name the file") {
  const std::string qwen = tokenizer_fixture("qwen2");
  {
    TempDir dir;
    dir.copy(qwen + "/vocab.json", "vocab.json");
    check_load_error(dir.str(), {dir.str() + "/merges.txt: missing"});
  }
  {
    TempDir dir;
    dir.copy(qwen + "/vocab.json", "vocab.json");
    dir.write("merges.txt", "#version: 0.2\nt h\nthree pieces here\n");
    check_load_error(dir.str(), {dir.str() + "/merges.txt: line 3: a merge must be two pieces"});
  }
  {
    TempDir dir;
    dir.copy(qwen + "/vocab.json", "vocab.json");
    dir.write("merges.txt", "#version: 0.2\nt h\nq \xE2\x98\x83\n");
    check_load_error(dir.str(), {dir.str() + "/merges.txt: line 3:", "is not in the vocab"});
  }
  {
    TempDir dir;
    dir.write("vocab.json", "[1, 2]");
    dir.write("merges.txt", "");
    check_load_error(dir.str(), {dir.str() + "/vocab.json: the top level must be an object"});
  }
  {
    TempDir dir;
    dir.copy(qwen + "/vocab.json", "vocab.json");
    dir.copy(qwen + "/merges.txt", "merges.txt");
    dir.write("tokenizer_config.json", R"({"added_tokens_decoder": {"x1": {"content": "<|a|>"}}})");
    check_load_error(dir.str(),
                     {dir.str() + "/tokenizer_config.json: key 'added_tokens_decoder.x1' is not a token id"});
  }
}

TEST_CASE("tokenizer: a large BPE (128k pieces, 127k merges) loads well under a second") {
  // Synthetic but shaped like LLaDA-8B's: byte alphabet, then each piece the merge of two earlier.
  json vocab = json::object(), merges = json::array();
  std::vector<std::string> pieces;
  for (int b = 0; b < 256; b++) {
    std::string s(1, static_cast<char>('A' + b % 26));
    s += std::to_string(b);
    pieces.push_back(s);
  }
  // note: byte-level-looking pieces are not needed for the timing; any consistent vocab will do.
  uint64_t state = 12345;
  auto next = [&] { return state = state * 6364136223846793005ULL + 1442695040888963407ULL; };
  while (pieces.size() < 128000) {
    const std::string& a = pieces[(next() >> 33) % pieces.size()];
    const std::string& b = pieces[(next() >> 33) % std::min<size_t>(pieces.size(), 2000)];
    std::string merged = a + b;
    if (merged.size() > 24 || vocab.contains(merged)) continue;
    merges.push_back(json::array({a, b}));
    vocab[merged] = 0;
    pieces.push_back(std::move(merged));
  }
  for (size_t i = 0; i < pieces.size(); i++) vocab[pieces[i]] = i;
  json j = gpt2_json();
  j["model"]["vocab"] = vocab;
  j["model"]["merges"] = merges;
  j["added_tokens"] = json::array();
  TempDir dir;
  dir.write("tokenizer.json", j.dump());
  const auto t0 = std::chrono::steady_clock::now();
  auto tok = unmask::load_tokenizer(dir.str());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("loaded ", tok->vocab_size(), " pieces in ", seconds, " s");
  CHECK(tok->vocab_size() == 128000);
  // note: generous for sanitizer and debug builds; a Release build takes a fraction of this.
  CHECK(seconds < 5.0);
}
