// safetensors tests: round-trips of F32/BF16/F16, sharded directories, and every malformed header.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;
using nlohmann::json;
using unmask::DType;

namespace {

struct StTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// 8-byte little-endian header length, header, data.
std::string st_image(const std::string& header, const std::string& data, uint64_t header_len) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; i++) out[i] = static_cast<char>((header_len >> (8 * i)) & 0xff);
  return out + header + data;
}
std::string st_image(const std::string& header, const std::string& data = "") {
  return st_image(header, data, header.size());
}

// A well-formed file: tensors laid out back to back in the given order, header padded to 8.
std::string st_build(const std::vector<StTensor>& tensors, const json& metadata = nullptr) {
  json header = json::object();
  std::string data;
  for (const StTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  if (!metadata.is_null()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  while (text.size() % 8 != 0) text += ' ';
  return st_image(text, data);
}

std::string f32_bytes(const std::vector<float>& v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}
std::string u16_bytes(const std::vector<uint16_t>& v) {
  std::string s(v.size() * 2, '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

// A fresh directory under the system temp dir, removed with everything in it.
struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() /
           ("unmask_st_" + std::to_string(::getpid()) + "_" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::string& bytes) const {
    std::ofstream f(path / name, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return (path / name).string();
  }
};

std::vector<unmask::TensorInfo> parse(const std::string& image) {
  return unmask::parse_safetensors(image.data(), image.size(), "m.safetensors");
}

// The call throws an Error with exit code 3 whose one-line message contains `phrase`.
void check_input_error(const std::function<void()>& call, const char* phrase) {
  CHECK_THROWS_WITH_AS(call(), doctest::Contains(phrase), unmask::Error);
  try {
    call();
  } catch (const unmask::Error& e) {
    CHECK(e.exit_code() == unmask::kExitBadInput);
    CHECK(std::string(e.what()).find('\n') == std::string::npos);
  }
}
void check_parse_error(const std::string& image, const char* phrase) {
  INFO("image header: ", image.size() > 8 ? image.substr(8, 200) : std::string("(short)"));
  check_input_error([&] { parse(image); }, phrase);
}

std::string entry_image(const std::string& entry, size_t data_bytes = 16) {
  return st_image("{\"t\":" + entry + "}", std::string(data_bytes, '\0'));
}

}  // namespace

TEST_CASE("safetensors: F32, BF16 and F16 tensors read back with their values") {
  const std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, -7.0f};
  const std::vector<float> bf = {1.0f, -0.5f, 256.0f};
  std::vector<uint16_t> bf_raw;
  for (float x : bf) bf_raw.push_back(unmask::f32_to_bf16(x));
  const std::vector<uint16_t> f16_raw = {0x3c00, 0xc000, 0x3800, 0x7bff};  // 1, -2, 0.5, 65504
  TempDir dir;
  std::string path = dir.write(
      "model.safetensors",
      st_build({{"a.weight", "F32", {2, 3}, f32_bytes(f32)},
                {"b.weight", "BF16", {3}, u16_bytes(bf_raw)},
                {"c.weight", "F16", {2, 2}, u16_bytes(f16_raw)}},
               json{{"format", "pt"}}));

  for (const auto& store : {unmask::TensorStore::open_file(path),
                            unmask::TensorStore::open_dir(dir.path.string())}) {
    REQUIRE(store.tensors().size() == 3);
    CHECK(store.find("__metadata__") == nullptr);
    CHECK(store.find("missing") == nullptr);
    CHECK(store.total_bytes() == 24 + 6 + 8);

    const unmask::TensorInfo* a = store.find("a.weight");
    REQUIRE(a != nullptr);
    CHECK(a->dtype == DType::F32);
    CHECK(a->shape == std::vector<int64_t>{2, 3});
    CHECK(a->n_bytes == 24);
    const auto* av = static_cast<const float*>(a->data);
    for (size_t i = 0; i < f32.size(); i++) CHECK(av[i] == f32[i]);

    const unmask::TensorInfo* b = store.find("b.weight");
    REQUIRE(b != nullptr);
    CHECK(b->dtype == DType::BF16);
    CHECK(b->shape == std::vector<int64_t>{3});
    const auto* bv = static_cast<const uint16_t*>(b->data);
    for (size_t i = 0; i < bf.size(); i++) CHECK(unmask::bf16_to_f32(bv[i]) == bf[i]);

    const unmask::TensorInfo* c = store.find("c.weight");
    REQUIRE(c != nullptr);
    CHECK(c->dtype == DType::F16);
    const auto* cv = static_cast<const uint16_t*>(c->data);
    CHECK(unmask::f16_to_f32(cv[0]) == 1.0f);
    CHECK(unmask::f16_to_f32(cv[1]) == -2.0f);
    CHECK(unmask::f16_to_f32(cv[2]) == 0.5f);
    CHECK(unmask::f16_to_f32(cv[3]) == 65504.0f);
  }
}

TEST_CASE("safetensors: zero-size tensors, empty data section, scalar shape") {
  // note: the infos point into the image, so each image outlives its checks.
  const std::string empty = st_build({{"empty", "F32", {0, 4}, ""}});
  auto infos = parse(empty);
  REQUIRE(infos.size() == 1);
  CHECK(infos[0].n_bytes == 0);
  CHECK(infos[0].shape == std::vector<int64_t>{0, 4});
  // A scalar has shape [] and one element.
  const std::string scalar = st_build({{"s", "F32", {}, f32_bytes({4.0f})}});
  infos = parse(scalar);
  REQUIRE(infos.size() == 1);
  CHECK(infos[0].n_bytes == 4);
  CHECK(*static_cast<const float*>(infos[0].data) == 4.0f);
  // An empty header object is a valid (empty) file.
  CHECK(parse(st_image("{}")).empty());
}

TEST_CASE("safetensors: a misaligned F32 tensor is copied to an aligned buffer") {
  TempDir dir;
  // One BF16 element puts the F32 tensor at data offset 2.
  std::string path = dir.write("model.safetensors",
                               st_build({{"a", "BF16", {1}, u16_bytes({0x3f80})},
                                         {"b", "F32", {2}, f32_bytes({3.5f, -1.25f})}}));
  auto store = unmask::TensorStore::open_file(path);
  const unmask::TensorInfo* b = store.find("b");
  REQUIRE(b != nullptr);
  CHECK(reinterpret_cast<uintptr_t>(b->data) % 4 == 0);
  const auto* v = static_cast<const float*>(b->data);
  CHECK(v[0] == 3.5f);
  CHECK(v[1] == -1.25f);
  // Moving the store keeps the pointers valid.
  unmask::TensorStore moved = std::move(store);
  CHECK(moved.find("b")->data == static_cast<const void*>(v));
  CHECK(static_cast<const float*>(moved.find("b")->data)[1] == -1.25f);
}

TEST_CASE("safetensors: malformed file framing") {
  check_parse_error("", "too short for a safetensors file (0 bytes");
  check_parse_error("abcdefg", "too short for a safetensors file (7 bytes");
  check_parse_error(st_image("{}", "", 3), "larger than the rest of the file");
  // The message gives both sizes.
  check_parse_error(st_image("{}", "", 1ull << 40),
                    "the safetensors header is 1099511627776 bytes, over unmask's limit of 104857600 bytes");
  check_parse_error(st_image("{}", "", ~0ull), "the safetensors header is 18446744073709551615 bytes, over");
  check_parse_error(st_image("{}", "", (100ull << 20) + 1), "is 104857601 bytes, over unmask's limit");
  check_parse_error(st_image(""), "not valid JSON");
  check_parse_error(st_image("{\"t\": "), "not valid JSON");
  check_parse_error(st_image("{} x"), "not valid JSON");
  check_parse_error(st_image("[1, 2]"), "not a JSON object");
  check_parse_error(st_image("\"text\""), "not a JSON object");
}

TEST_CASE("safetensors: malformed tensor entries") {
  check_parse_error(entry_image("5"), "tensor 't': entry must be an object (got 5)");
  check_parse_error(entry_image("[]"), "entry must be an object (got an array)");
  check_parse_error(entry_image(R"({"shape":[1],"data_offsets":[0,4]})"), "tensor 't': missing 'dtype'");
  check_parse_error(entry_image(R"({"dtype":7,"shape":[1],"data_offsets":[0,4]})"),
                    "'dtype' must be a string (got 7)");
  check_parse_error(entry_image(R"({"dtype":"I64","shape":[1],"data_offsets":[0,8]})"),
                    "tensor 't': dtype I64 unsupported");
  check_parse_error(entry_image(R"({"dtype":"f32","shape":[1],"data_offsets":[0,4]})"),
                    "dtype f32 unsupported");
  check_parse_error(entry_image(R"({"dtype":"F32","data_offsets":[0,4]})"), "missing 'shape'");
  check_parse_error(entry_image(R"({"dtype":"F32","shape":3,"data_offsets":[0,4]})"),
                    "'shape' must be an array of non-negative integers (got 3)");
  check_parse_error(entry_image(R"({"dtype":"F32","shape":[2,-1],"data_offsets":[0,4]})"),
                    "'shape' dimension 1 must be a non-negative integer (got -1)");
  check_parse_error(entry_image(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,4]})"),
                    "'shape' dimension 0 must be a non-negative integer (got 1.5)");
  check_parse_error(entry_image(R"({"dtype":"F32","shape":["2"],"data_offsets":[0,8]})"),
                    "'shape' dimension 0 must be a non-negative integer (got \"2\")");
  check_parse_error(entry_image(R"({"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,4]})"),
                    "'shape' dimension 0 is too large");
  check_parse_error(entry_image(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]})"),
                    "is too large (byte size overflows)");
  // The element count alone fits, the byte size does not.
  check_parse_error(entry_image(R"({"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]})"),
                    "byte size overflows");
  check_parse_error(entry_image(R"({"dtype":"F32","shape":[1]})"), "missing 'data_offsets'");
  check_parse_error(entry_image(R"({"dtype":"F32","shape":[1],"data_offsets":[0]})"),
                    "'data_offsets' must be two non-negative integers");
  check_parse_error(entry_image(R"({"dtype":"F32","shape":[1],"data_offsets":[-4,0]})"),
                    "'data_offsets' must be two non-negative integers");
  check_parse_error(entry_image(R"({"dtype":"F32","shape":[1],"data_offsets":{"a":1}})"),
                    "'data_offsets' must be two non-negative integers");
  check_parse_error(entry_image(R"({"dtype":"F32","shape":[1],"data_offsets":[8,4]})"),
                    "data_offsets [8, 4] has begin > end");
  check_parse_error(entry_image(R"({"dtype":"F32","shape":[2],"data_offsets":[12,20]})"),
                    "data_offsets end 20 is beyond the data section (16 bytes)");
  check_parse_error(entry_image(R"({"dtype":"F32","shape":[2],"data_offsets":[0,4]})"),
                    "data_offsets span 4 bytes but F32 [2] needs 8 bytes");
  check_parse_error(entry_image(R"({"dtype":"BF16","shape":[2,3],"data_offsets":[0,16]})"),
                    "span 16 bytes but BF16 [2, 3] needs 12 bytes");
}

TEST_CASE("safetensors: overlapping ranges, duplicate names, metadata") {
  std::string data(16, '\0');
  check_parse_error(st_image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", data),
                    "tensors 'a' and 'b' overlap in the data section");
  // Order in the header does not matter, nor does an empty range sitting inside another.
  check_parse_error(st_image(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                             R"("b":{"dtype":"F16","shape":[2],"data_offsets":[12,16]}})", data),
                    "overlap");
  CHECK(parse(st_image(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                       R"("b":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}})", data))
            .size() == 2);
  check_parse_error(st_image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", data),
                    "tensor 'a' appears twice in the header");
  check_parse_error(st_image(R"({"__metadata__":{"format":1}})"),
                    "'__metadata__' must be an object of strings");
  check_parse_error(st_image(R"({"__metadata__":"pt"})"), "'__metadata__' must be an object of strings");
  CHECK(parse(st_image(R"({"__metadata__":{"format":"pt"}})")).empty());
}

TEST_CASE("safetensors: hostile names stay on one line in messages") {
  std::string image = st_image("{\"bad\\nname\\u0001\":5}");
  check_parse_error(image, "tensor 'bad\\x0aname\\x01'");
}

TEST_CASE("safetensors: file-level errors name the path") {
  TempDir dir;
  std::string missing = (dir.path / "nope.safetensors").string();
  check_input_error([&] { unmask::TensorStore::open_file(missing); }, "nope.safetensors: cannot open");
  std::string empty = dir.write("empty.safetensors", "");
  check_input_error([&] { unmask::TensorStore::open_file(empty); }, "empty.safetensors: too short");
  check_input_error([&] { unmask::TensorStore::open_file(dir.path.string()); }, "not a regular file");
  check_input_error([&] { unmask::TensorStore::open_dir((dir.path / "absent").string()); },
                    "absent: model directory not found");
  check_input_error([&] { unmask::TensorStore::open_dir(empty); }, "empty.safetensors: not a directory");
  check_input_error([&] { unmask::TensorStore::open_dir(dir.path.string()); },
                    "no model.safetensors or model.safetensors.index.json");
}

namespace {

// Two shards: "x" and "y" in the first, "z" in the second.
void write_shards(const TempDir& dir) {
  dir.write("s1.safetensors", st_build({{"x", "F32", {2}, f32_bytes({1.0f, 2.0f})},
                                        {"y", "F32", {1}, f32_bytes({3.0f})}}));
  dir.write("s2.safetensors", st_build({{"z", "BF16", {2}, u16_bytes({0x4000, 0x4080})}}));
}

void write_index(const TempDir& dir, const std::string& text) {
  dir.write("model.safetensors.index.json", text);
}

}  // namespace

TEST_CASE("safetensors: sharded directory with an index") {
  TempDir dir;
  write_shards(dir);
  write_index(dir, R"({"metadata":{"total_size":14},"weight_map":)"
                   R"({"x":"s1.safetensors","y":"s1.safetensors","z":"s2.safetensors"}})");
  auto store = unmask::TensorStore::open_dir(dir.path.string());
  CHECK(store.tensors().size() == 3);
  CHECK(store.total_bytes() == 16);
  CHECK(store.source() == dir.path.string());
  REQUIRE(store.find("x") != nullptr);
  CHECK(static_cast<const float*>(store.find("x")->data)[1] == 2.0f);
  CHECK(static_cast<const float*>(store.find("y")->data)[0] == 3.0f);
  REQUIRE(store.find("z") != nullptr);
  CHECK(unmask::bf16_to_f32(static_cast<const uint16_t*>(store.find("z")->data)[1]) == 4.0f);

  // model.safetensors takes precedence over the index.
  dir.write("model.safetensors", st_build({{"only", "F32", {1}, f32_bytes({9.0f})}}));
  auto single = unmask::TensorStore::open_dir(dir.path.string());
  CHECK(single.tensors().size() == 1);
  CHECK(single.find("only") != nullptr);
}

TEST_CASE("safetensors: malformed sharded directories") {
  TempDir dir;
  write_shards(dir);
  const std::string d = dir.path.string();
  auto open = [&] { unmask::TensorStore::open_dir(d); };

  write_index(dir, "{\"weight_map\": ");
  check_input_error(open, "model.safetensors.index.json: not valid JSON");
  write_index(dir, "[]");
  check_input_error(open, "index.json: not a JSON object");
  write_index(dir, R"({"metadata":{}})");
  check_input_error(open, "missing 'weight_map'");
  write_index(dir, R"({"weight_map":["s1.safetensors"]})");
  check_input_error(open, "'weight_map' must be an object");
  write_index(dir, R"({"weight_map":{}})");
  check_input_error(open, "'weight_map' is empty");
  write_index(dir, R"({"weight_map":{"x":3}})");
  check_input_error(open, "'weight_map' entry for tensor 'x' must be a file name (got 3)");
  write_index(dir, R"({"weight_map":{"x":"../s1.safetensors"}})");
  check_input_error(open, "shard '../s1.safetensors' for tensor 'x' must be a plain file name");
  write_index(dir, R"({"weight_map":{"x":"sub/s1.safetensors"}})");
  check_input_error(open, "must be a plain file name");
  write_index(dir, R"({"weight_map":{"x":".."}})");
  check_input_error(open, "must be a plain file name");
  write_index(dir, R"({"weight_map":{"x":"s1.safetensors","x":"s2.safetensors"}})");
  check_input_error(open, "tensor 'x' is listed twice in 'weight_map'");
  write_index(dir, R"({"weight_map":{"x":"s3.safetensors"}})");
  check_input_error(open, "shard 's3.safetensors' is listed in 'weight_map' but not found");
  write_index(dir, R"({"weight_map":{"w":"s1.safetensors"}})");
  check_input_error(open, "tensor 'w' is mapped to 's1.safetensors', which does not contain it");
  write_index(dir, R"({"weight_map":{"x":"s1.safetensors","z":"s1.safetensors"}})");
  check_input_error(open, "tensor 'z' is mapped to 's1.safetensors', which does not contain it");

  // The same tensor stored in two shards.
  dir.write("s3.safetensors", st_build({{"x", "F32", {1}, f32_bytes({5.0f})}}));
  write_index(dir, R"({"weight_map":{"x":"s1.safetensors","q":"s3.safetensors"}})");
  check_input_error(open, "tensor 'x' appears in both 's1.safetensors' and 's3.safetensors'");
  // A listed shard that is itself malformed names the shard file.
  dir.write("s4.safetensors", "short");
  write_index(dir, R"({"weight_map":{"x":"s1.safetensors","y":"s4.safetensors"}})");
  check_input_error(open, "s4.safetensors: too short");
}
