// Non-finite weights and activations: the request ends with an error (never token 0 and exit 0),
// a batch line becomes an error record, and `info --check-weights` names the damaged tensor.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "common.h"
#include "decode/sampler.h"
#include "fixtures.h"
#include "io/safetensors.h"
#include "io/tensor_check.h"

using unmask::test::fixture;
using unmask::test::run_unmask;
namespace fs = std::filesystem;
using namespace unmask;

namespace {

// A copy of tiny-f32-gqa whose tensor `name` has `value` at element `index`.
std::string damaged_model(const std::string& tag, const std::string& name, int64_t index, float value) {
  const fs::path dir = fs::temp_directory_path() / ("unmask_nonfinite_" + tag);
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"})
    fs::copy_file(fixture("tiny-f32-gqa") + "/" + f, dir / f);
  std::fstream f(dir / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
  uint64_t header_bytes = 0;
  f.read(reinterpret_cast<char*>(&header_bytes), 8);
  std::string header(header_bytes, '\0');
  f.read(header.data(), static_cast<std::streamsize>(header_bytes));
  const auto j = nlohmann::json::parse(header);
  REQUIRE(j[name]["dtype"] == "F32");
  const int64_t offset = 8 + static_cast<int64_t>(header_bytes) + j[name]["data_offsets"][0].get<int64_t>() + 4 * index;
  f.seekp(offset);
  f.write(reinterpret_cast<const char*>(&value), 4);
  return dir.string();
}

const char* kNorm = "model.transformer.ln_f.weight";
const std::string kGen = " --gen-length 16 --steps 16 --block-length 16 ";

}  // namespace

TEST_CASE("NaN weights end a one-off prompt with exit 1 and a message, not token 0") {
  const std::string dir = damaged_model("nan", kNorm, 3, std::numeric_limits<float>::quiet_NaN());
  const auto r = run_unmask("-m " + dir + kGen + "'In the beginning'");
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("non-finite logits at step 1: the weights contain NaN/Inf or the activations "
                   "overflowed") != std::string::npos);
  CHECK(r.out.empty());
  const auto j = run_unmask("-m " + dir + kGen + "--format json 'In the beginning'");
  CHECK(j.exit_code == 1);
  CHECK(j.out.empty());
}

TEST_CASE("NaN weights turn batch lines into error records, exit 4") {
  const std::string dir = damaged_model("nanbatch", kNorm, 0, std::numeric_limits<float>::infinity());
  const fs::path in = fs::path(dir) / "in.jsonl", out = fs::path(dir) / "out.jsonl";
  std::ofstream(in) << "{\"prompt\": \"In the beginning\"}\n{\"prompt\": \"And God said\"}\n";
  const auto r = run_unmask("batch -m " + dir + kGen + "-i " + in.string() + " -o " + out.string());
  CHECK(r.exit_code == 4);
  std::ifstream f(out);
  int errors = 0;
  for (std::string line; std::getline(f, line);) {
    const auto rec = nlohmann::json::parse(line);
    REQUIRE(rec.contains("error"));
    CHECK(rec["error"].get<std::string>().find("non-finite logits at step 1") != std::string::npos);
    CHECK(!rec.contains("ids"));
    errors++;
  }
  CHECK(errors == 2);
}

TEST_CASE("info --check-weights names the first tensor holding NaN or Inf") {
  const auto good = run_unmask("info -m " + fixture("tiny-f32-gqa") + " --check-weights --format json");
  REQUIRE(good.exit_code == 0);
  CHECK(nlohmann::json::parse(good.out)["check_weights"].get<std::string>().find("ok") == 0);

  const std::string dir = damaged_model("check", "model.transformer.blocks.1.ff_out.weight", 17,
                                        -std::numeric_limits<float>::infinity());
  const auto bad = run_unmask("info -m " + dir + " --check-weights");
  CHECK(bad.exit_code == 3);
  CHECK(bad.err.find("tensor 'model.transformer.blocks.1.ff_out.weight' holds 1 NaN/Inf value(s)") !=
        std::string::npos);
  CHECK(bad.err.find("the first at element 17") != std::string::npos);
  // Without the flag, info does not read the weights.
  CHECK(run_unmask("info -m " + dir).exit_code == 0);
}

TEST_CASE("the NaN/Inf scan reads bf16 and f16 by bit pattern") {
  TensorInfo t;
  t.name = "w";
  std::vector<uint16_t> bf16 = {0x3f80, 0x7f80 /* +inf */, 0xffc1 /* nan */, 0x7f7f /* max */};
  t.dtype = DType::BF16;
  t.data = bf16.data();
  t.n_bytes = bf16.size() * 2;
  NonFiniteTensor r = scan_non_finite(t);
  CHECK(r.count == 2);
  CHECK(r.first_index == 1);
  std::vector<uint16_t> f16 = {0x3c00, 0x7bff /* max */, 0xfc00 /* -inf */};
  t.dtype = DType::F16;
  t.data = f16.data();
  t.n_bytes = f16.size() * 2;
  r = scan_non_finite(t);
  CHECK(r.count == 1);
  CHECK(r.first_index == 2);
}

TEST_CASE("the sampler ends a request whose pick saw non-finite logits, or nothing to choose") {
  const ModelConfig c = unmask::test::small_llada_config();
  GenerationSettings s;
  s.gen_length = s.steps = s.block_length = 4;
  Sampler a({5, 6}, s, c);
  std::vector<PickResult> picks(a.wanted().size());
  for (auto& p : picks) p.token = 3, p.prob = 0.5f;
  a.commit(picks);  // step 1 fine
  REQUIRE(!a.done());
  picks.assign(a.wanted().size(), PickResult{});
  picks[0].finite = false;
  a.commit(picks);
  CHECK(a.done());
  CHECK(a.error().find("non-finite logits at step 2") == 0);

  Sampler b({5, 6}, s, c);
  picks.assign(b.wanted().size(), PickResult{});  // token -1, finite: every token banned
  b.commit(picks);
  CHECK(b.done());
  CHECK(b.error().find("every token of the vocabulary is banned") != std::string::npos);
}
