// The CLI on the Dream, llama-format and BPE-tokenized LLaDA fixtures: info, --chat, --system,
// --alg, --mask-id, chat messages in batch files, and their errors.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "fixtures.h"

using unmask::test::fixture;
using unmask::test::load_json;
using unmask::test::run_unmask;
namespace fs = std::filesystem;

namespace {
const std::string kDream = "-m " + fixture("tiny-dream");
const std::string kLlama = "-m " + fixture("tiny-llama") + " --mask-id 811";
const std::string kLladaBpe = "-m " + fixture("tiny-llada-bpe");

nlohmann::json info_json(const std::string& model) {
  const auto r = run_unmask("info --format json " + model);
  REQUIRE(r.exit_code == 0);
  return nlohmann::json::parse(r.out);
}
}  // namespace

TEST_CASE("info prints the family, sizes, tokenizer, special ids and chat template it detected") {
  const auto dream = info_json(kDream);
  CHECK(dream["family"] == "dream");
  CHECK(dream["d_model"] == 56);
  CHECK(dream["n_heads"] == 7);
  CHECK(dream["n_kv_heads"] == 1);
  CHECK(dream["shifted_logits"] == true);
  CHECK(dream["default_alg"] == "entropy");
  CHECK(dream["tokenizer"] == "bpe (vocab.json + merges.txt)");
  CHECK(dream["mask_token_id"] == 403);
  CHECK(dream["mask_token"] == "<|mask|>");
  CHECK(dream["stop_token_ids"] == nlohmann::json({400, 402}));
  CHECK(dream["stop_tokens"] == nlohmann::json({"<|endoftext|>", "<|im_end|>"}));
  CHECK(dream["chat_template"] == "chatml");
  CHECK(dream["chat_default_system"] == "You are a helpful assistant.");

  const auto llama = info_json(kLlama);
  CHECK(llama["family"] == "llama");
  CHECK(llama["tokenizer"] == "sentencepiece");
  CHECK(llama["mask_token_id"] == 811);
  CHECK(llama["default_alg"] == "maskgit_plus");
  CHECK(llama["chat_template"] == "none");

  const auto llada = info_json(kLladaBpe);
  CHECK(llada["family"] == "llada");
  CHECK(llada["shifted_logits"] == false);
  CHECK(llada["tokenizer"] == "bpe (tokenizer.json)");
  CHECK(llada["mask_token"] == "<|mdm_mask|>");
  CHECK(llada["stop_tokens"] == nlohmann::json({"<|endoftext|>", "<|eot_id|>"}));
  CHECK(llada["chat_template"] == "llada (header turns)");

  // The text form carries the same facts, one per line.
  const auto text = run_unmask("info " + kDream);
  CHECK(text.out.find("family: dream\n") != std::string::npos);
  CHECK(text.out.find("chat_template: chatml\n") != std::string::npos);
}

TEST_CASE("--chat generation reproduces the reference's chat case through the CLI") {
  const auto families = load_json(fixture("families.json"));
  for (const auto& c : families["generate"]) {
    if (c["name"] != "dream_chat_system" && c["name"] != "lladabpe_chat_system") continue;
    CAPTURE(c["name"].get<std::string>());
    const std::string model = "-m " + fixture(c["model"].get<std::string>());
    std::string args = "--format json --chat --system '" + c["chat"]["system"].get<std::string>() +
                       "' --gen-length " + std::to_string(c["gen_length"].get<int>()) + " --steps " +
                       std::to_string(c["steps"].get<int>()) + " --alg " +
                       (c["loop"] == "llada" ? std::string("llada") : c["alg"].get<std::string>());
    if (c["loop"] == "llada") args += " --block-length " + std::to_string(c["block_length"].get<int>());
    const auto r = run_unmask(model + " " + args + " --no-eos-stop '" + c["chat"]["user"].get<std::string>() + "'");
    REQUIRE(r.exit_code == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["prompt_ids"] == c["prompt_ids"]);
    CHECK(j["ids"] == c["expected_ids"]);
    CHECK(j["settings"]["alg"] == (c["loop"] == "llada" ? "llada" : c["alg"]));
  }
}

TEST_CASE("chat, algorithm and mask-id errors say what to change") {
  auto usage = [](const std::string& args, const char* phrase) {
    CAPTURE(args);
    const auto r = run_unmask(args);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(phrase) != std::string::npos);
  };
  usage("-m " + fixture("tiny-f32-gqa") + " --chat hello", "--chat is unsupported for this model");
  usage(kLlama + " --chat hello", "--chat is unsupported for this model");
  usage(kDream + " --system 'be brief' hello", "--system needs --chat");
  usage(kDream + " --alg sideways hello", "--alg: unknown algorithm 'sideways'");
  usage(kDream + " --block-length 8 hello", "--block-length applies to --alg llada only");
  usage(kDream + " --threshold 0.9 hello", "--threshold/--factor applies to --alg llada only");
  usage(kDream + " --cache dual hello", "--cache applies to --alg llada only");
  usage(kDream + " --alg origin --alg-temp 0.5 hello", "--alg-temp has no effect with --alg origin");
  usage(kLladaBpe + " --alg-temp 0.5 hello", "--alg-temp applies to Dream's loop");
  usage("-m " + fixture("tiny-llama") + " --mask-id 5000 hello", "--mask-id 5000 is outside");
  usage("-m " + fixture("tiny-llama") + " --mask-id 2 hello", "is also an end-of-text id");

  // A llama-format checkpoint names no mask token: the error says how to give one.
  const auto r = run_unmask("-m " + fixture("tiny-llama") + " hello");
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("no mask_token_id") != std::string::npos);
  CHECK(r.err.find("--mask-id") != std::string::npos);
}

TEST_CASE("batch: messages lines use the chat template; prompt lines with --chat too") {
  const fs::path dir = fs::temp_directory_path() / "unmask_batch_chat";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string in = (dir / "in.jsonl").string(), out = (dir / "out.jsonl").string();
  std::ofstream(in) << R"({"id": "m", "messages": [{"role": "user", "content": "And God saw the light"}]})" "\n"
                    << R"({"id": "p", "prompt": "And God saw the light"})" "\n";
  const std::string common = kDream + " --gen-length 12 --steps 12 -q -i " + in + " -o " + out;
  REQUIRE(run_unmask("batch --chat " + common).exit_code == 0);
  std::ifstream lines(out);
  std::string a, b;
  std::getline(lines, a);
  std::getline(lines, b);
  const auto ja = nlohmann::json::parse(a), jb = nlohmann::json::parse(b);
  // The same user turn either way, so the same prompt and answer; the one-off CLI agrees.
  CHECK(ja["prompt_tokens"] == jb["prompt_tokens"]);
  CHECK(ja["ids"] == jb["ids"]);
  const auto single = run_unmask(kDream + " --gen-length 12 --steps 12 --format json --chat 'And God saw the light'");
  REQUIRE(single.exit_code == 0);
  CHECK(nlohmann::json::parse(single.out)["ids"] == ja["ids"]);

  // Without a template a messages line becomes an error record, and the others still run.
  std::ofstream(in) << R"({"id": 1, "messages": [{"role": "user", "content": "hi"}]})" "\n"
                    << R"({"id": 2, "prompt": "In the beginning"})" "\n";
  fs::remove(out);
  const auto r = run_unmask("batch -m " + fixture("tiny-f32-gqa") + " --gen-length 8 --steps 8 -q -i " + in + " -o " + out);
  CHECK(r.exit_code == 4);
  std::ifstream again(out);
  std::string all((std::istreambuf_iterator<char>(again)), std::istreambuf_iterator<char>());
  CHECK(all.find("--chat is unsupported for this model") != std::string::npos);
  CHECK(all.find("\"id\":2") != std::string::npos);
}

TEST_CASE("a sentencepiece model adds BOS when tokenizer_config.json says add_bos_token") {
  const fs::path dir = fs::temp_directory_path() / "unmask_llama_bos";
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"})
    fs::copy_file(fixture("tiny-llama") + "/" + f, dir / f);
  const std::string args = "--format json --mask-id 811 --gen-length 4 --steps 4 -m " + dir.string() + " 'In the beginning'";
  const auto plain = run_unmask(args);
  REQUIRE(plain.exit_code == 0);
  const auto ids = nlohmann::json::parse(plain.out)["prompt_ids"];
  CHECK(ids[0] != 1);

  std::ofstream(dir / "tokenizer_config.json") << R"({"bos_token": "<s>", "add_bos_token": true})";
  const auto with_bos = run_unmask(args);
  REQUIRE(with_bos.exit_code == 0);
  auto expected = nlohmann::json::array({1});
  for (const auto& id : ids) expected.push_back(id);
  CHECK(nlohmann::json::parse(with_bos.out)["prompt_ids"] == expected);

  std::ofstream(dir / "tokenizer_config.json") << R"({"bos_token": "<s>", "add_bos_token": "yes"})";
  const auto bad = run_unmask(args);
  CHECK(bad.exit_code == 3);
  CHECK(bad.err.find("tokenizer_config.json: key 'add_bos_token' must be true or false") != std::string::npos);
}
