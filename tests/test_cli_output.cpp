// What unmask says: special tokens in and out of text, one UTF-8 repair rule, the answer's
// leading space, choices and departures said on stderr, and unexplained outcomes explained.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "cli/output.h"
#include "decode/session.h"
#include "fixtures.h"
#include "tokenizer/tokenizer.h"

using namespace unmask;
using unmask::test::fixture;
using unmask::test::run_unmask;
namespace fs = std::filesystem;

namespace {

// A copy of a fixture model directory, optionally with config.json edited by `edit`.
std::string model_copy(const std::string& fixture_name, const std::string& tag,
                       const std::function<void(nlohmann::json&)>& edit = nullptr) {
  const fs::path dir = fs::temp_directory_path() / ("unmask_out_" + tag);
  fs::remove_all(dir);
  fs::copy(fixture(fixture_name), dir, fs::copy_options::recursive);
  if (edit) {
    nlohmann::json j = unmask::test::load_json((dir / "config.json").string());
    edit(j);
    std::ofstream(dir / "config.json") << j.dump(2);
  }
  return dir.string();
}

}  // namespace

TEST_CASE("sentencepiece: control and unknown pieces written in the text encode to their ids") {
  const auto tok = load_tokenizer(fixture("tiny-llama"));
  REQUIRE(tok->kind() == "sentencepiece");
  // As sentencepiece matches user-defined symbols: one dummy prefix at the start, none after.
  const std::vector<int32_t> want = {tok->piece_to_id("\xe2\x96\x81" "a"), 1, tok->piece_to_id("b"), 2,
                                     tok->piece_to_id("c"), 0, tok->piece_to_id("d")};
  CHECK(tok->encode("a<s>b</s>c<unk>d") == want);
  CHECK(tok->encode("<s>") == std::vector<int32_t>{tok->piece_to_id("\xe2\x96\x81"), 1});
  // Plain text is unchanged by the matching, and decode gives the specials back as text.
  CHECK(tok->decode(tok->encode("abc <unk")) == "abc <unk");
  CHECK(tok->decode(want) == "a<s>b</s>c<unk>d");
  CHECK(tok->is_special(0));
  CHECK(tok->is_special(1));
  CHECK(!tok->is_special(tok->piece_to_id("b")));
  // The bundled model's user-defined mask piece still matches.
  const auto bundled = load_tokenizer(UNMASK_MODELS_DIR);
  const std::vector<int32_t> ids = bundled->encode("In the <|mdm_mask|> God");
  CHECK(std::count(ids.begin(), ids.end(), bundled->piece_to_id("<|mdm_mask|>")) == 1);
}

TEST_CASE("one UTF-8 repair rule on both tokenizer kinds: one U+FFFD per maximal invalid subsequence") {
  for (const char* model : {"tiny-llama", "tiny-f32-gqa", "tiny-llada-bpe", "tiny-dream"}) {
    CAPTURE(model);
    const auto tok = load_tokenizer(fixture(model));
    // \xc3 lacks its continuation; \xe2\x82 is one truncated three-byte sequence: two U+FFFD.
    CHECK(tok->encode("x\xc3(y\xe2\x82z") == tok->encode("x\xef\xbf\xbd(y\xef\xbf\xbdz"));
    CHECK(tok->encode("a\xff\xfe" "b") == tok->encode("a\xef\xbf\xbd\xef\xbf\xbd" "b"));
  }
}

TEST_CASE("printed text leaves special tokens out unless kept; ids always keep them") {
  const auto bpe = load_tokenizer(fixture("tiny-llada-bpe"));
  const int32_t header = bpe->piece_to_id("<|start_header_id|>"), eot = bpe->piece_to_id("<|eot_id|>");
  REQUIRE(bpe->is_special(header));
  const std::vector<int32_t> hello = bpe->encode(" hello");
  std::vector<int32_t> ids = {header};
  ids.insert(ids.end(), hello.begin(), hello.end());
  ids.push_back(eot);
  ids.push_back(hello[0]);
  CHECK(decode_text(*bpe, ids, {eot}) == " hello");
  CHECK(decode_text(*bpe, ids, {eot}, true) == "<|start_header_id|> hello");
  CHECK(decode_text(*bpe, ids, {}, true) == "<|start_header_id|> hello<|eot_id|>" + bpe->decode({hello[0]}));
  const auto sp = load_tokenizer(fixture("tiny-llama"));
  CHECK(decode_text(*sp, {1, sp->piece_to_id("b"), 0}, {}) == "b");
  CHECK(decode_text(*sp, {1, sp->piece_to_id("b"), 0}, {}, true) == "<s>b<unk>");
}

TEST_CASE("prompt text + answer text == the text of prompt ids + answer ids (no lost leading space)") {
  for (const char* model : {"tiny-f32-gqa", "tiny-llada-bpe", "tiny-dream"}) {
    CAPTURE(model);
    auto session = open_session(fixture(model), "cpu", 1);
    GenerationSettings s;
    s.gen_length = s.steps = 8;
    s.block_length = 8;
    s.alg = default_algorithm(session->config);
    s.eos_stop = false;
    for (const char* text : {"In the beginning", "And God said", "Let there be"}) {
      CAPTURE(text);
      Sampler sampler(encode_prompt(*session, text, false, std::nullopt), s, session->config);
      Engine engine(*session->model);
      engine.run({&sampler});
      std::vector<int32_t> both = sampler.filled_prompt();
      const std::vector<int32_t> answer = sampler.answer();
      both.insert(both.end(), answer.begin(), answer.end());
      const auto& stops = session->config.stop_token_ids;
      CHECK(decode_text(*session->tokenizer, sampler.filled_prompt(), {}) + answer_text(*session, sampler, false) ==
            decode_text(*session->tokenizer, both, stops));
    }
  }
  // The bundled model's sentencepiece answer keeps the space its first piece spells.
  const auto r = run_unmask("-q --gen-length 8 --steps 8 --block-length 4 'In the beginning'");
  REQUIRE(r.exit_code == 0);
  REQUIRE(r.out.size() > 2);
  CHECK(r.out[0] == ' ');
}

TEST_CASE("a tokenizer.model that is a tiktoken file names the cause and the file that works") {
  const std::string dir = model_copy("tiny-f32-gqa", "tiktoken");
  std::ofstream(fs::path(dir) / "tokenizer.model") << "IQ== 0\nIg== 1\nIw== 2\n";
  const auto r = run_unmask("-m " + dir + " x");
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("tokenizer.model: not a sentencepiece model but a tiktoken BPE file") != std::string::npos);
  CHECK(r.err.find("tokenizer.json") != std::string::npos);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  std::ofstream(fs::path(dir) / "tokenizer.model") << "garbage";
  const auto g = run_unmask("-m " + dir + " x");
  CHECK(g.exit_code == 3);
  CHECK(g.err.find("not a valid sentencepiece model") != std::string::npos);
}

TEST_CASE("files and tensors chosen over others are said on stderr") {
  // A stray single file beside a shard index: the single file wins, as in transformers.
  const std::string stray = model_copy("tiny-f32-gqa", "stray");
  std::ofstream(fs::path(stray) / "model.safetensors.index.json")
      << R"({"weight_map": {"model.transformer.wte.weight": "model-00001-of-00002.safetensors"}})";
  auto r = run_unmask("-m " + stray + " --gen-length 8 --block-length 8 x");
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("model.safetensors and model.safetensors.index.json are both present: using "
                   "model.safetensors") != std::string::npos);
  CHECK(run_unmask("-q -m " + stray + " --gen-length 8 --block-length 8 x").err.empty());
  // Tied embeddings beside a stored head: the embedding is the head.
  const std::string tied = model_copy("tiny-f32-gqa", "tied", [](nlohmann::json& j) { j["weight_tying"] = true; });
  r = run_unmask("-m " + tied + " --gen-length 8 --block-length 8 x");
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("weight_tying is true, so the output head is the embedding 'model.transformer.wte.weight'; "
                   "the stored 'model.transformer.ff_out.weight' is ignored") != std::string::npos);
  // Configuration-class defaults for absent keys.
  const std::string bare = model_copy("tiny-f32-gqa", "bare", [](nlohmann::json& j) {
    j.erase("rope_theta");
    j.erase("rms_norm_eps");
  });
  r = run_unmask("-m " + bare + " --gen-length 8 --block-length 8 x");
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("absent keys take the llada configuration class's defaults: rope_theta 10000, "
                   "rms_norm_eps 1e-05") != std::string::npos);
}

TEST_CASE("departures from the model's trained and configured settings are said once") {
  const std::string dir = model_copy("tiny-f32-gqa", "trained", [](nlohmann::json& j) {
    j["unmask_train_seq_len"] = 32;
    j["unmask_defaults"] = {{"gen_length", 16}, {"block_length", 8}};
  });
  auto r = run_unmask("-m " + dir + " --gen-length 12 'In the beginning'");
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("block length 8 (the model's unmask_defaults) does not divide --gen-length 12, so the "
                   "answer is decoded in blocks of 12 (one block)") != std::string::npos);
  r = run_unmask("-m " + dir + " --gen-length 40 'In the beginning'");
  CHECK(r.err.find("is longer than the 32 positions this model was trained on") != std::string::npos);
  CHECK(r.err.find("does not divide") == std::string::npos);  // 40 is a multiple of 8
  // Within the trained length and the defaults: nothing is said but the stats.
  r = run_unmask("-m " + dir + " 'In the beginning'");
  CHECK(r.err.find("note:") == std::string::npos);
  // info shows the defaults and the trained length.
  const auto info = run_unmask("info -m " + dir + " --format json");
  REQUIRE(info.exit_code == 0);
  const auto j = nlohmann::json::parse(info.out);
  CHECK(j["trained_sequence_length"] == 32);
  CHECK(j["generation_defaults"]["gen_length"] == 16);
  CHECK(j["generation_defaults"]["block_length"] == 8);
  CHECK(j["generation_defaults"]["steps"] == 16);
  // A batch says it once for all its lines.
  const fs::path in = fs::path(dir) / "in.jsonl", out = fs::path(dir) / "out.jsonl";
  std::ofstream(in) << "{\"prompt\": \"a\", \"gen_length\": 40}\n{\"prompt\": \"b\", \"gen_length\": 40}\n";
  r = run_unmask("batch -m " + dir + " -i " + in.string() + " -o " + out.string());
  CHECK(r.exit_code == 0);
  CHECK(r.err.find("2 of 2 requests have a canvas") != std::string::npos);
}

TEST_CASE("an answer the model ends at once, or that leaves masks, is explained") {
  auto session = open_session(fixture("tiny-f32-gqa"), "cpu", 1);
  GenerationSettings s;
  s.gen_length = s.steps = s.block_length = 2;
  Sampler sampler({5, 6}, s, session->config);
  std::vector<PickResult> picks(sampler.wanted().size());
  for (PickResult& p : picks) p.token = session->config.eos_token_id, p.prob = 0.5f;
  sampler.commit(picks);
  const auto notes = outcome_notes(*session, sampler, false);
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].find("the model ended the answer at once: its first answer token is the end-of-text "
                      "token '<|endoftext|>'") == 0);

  // LLaDA's fixed schedule with masks in the prompt leaves as many masks: said, and the text
  // output is the filled prompt followed by the answer.
  const auto cases = unmask::test::load_json(fixture("generate.json"))["cases"];
  for (const auto& c : cases) {
    if (c["name"] != "infill_g16_s16_b8" || c["model"] != "tiny-f32-gqa") continue;
    const std::string args = "-m " + fixture("tiny-f32-gqa") + " --gen-length 16 --steps 16 --block-length 8 '" +
                             c["prompt_text"].get<std::string>() + "'";
    const auto r = run_unmask(args);
    REQUIRE(r.exit_code == 0);
    CHECK(r.err.find("2 mask token(s) remain unfilled: LLaDA's block schedule commits as many tokens as the "
                     "answer's blocks hold, so the 2 mask(s) written in the prompt leave as many behind") !=
          std::string::npos);
    const auto j = run_unmask(args + " --format json");
    const auto doc = nlohmann::json::parse(j.out);
    CHECK(doc["filled_prompt_ids"] == c["expected_filled_prompt_ids"]);
    CHECK(doc["ids"] == c["expected_ids"]);
    CHECK(r.out == doc["filled_prompt"].get<std::string>() + doc["text"].get<std::string>() + "\n");
  }
}
