// safetensors parsing and mapping: every size and offset in the header is untrusted input.
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <nlohmann/json.hpp>

#include "common.h"

namespace unmask {

using json = nlohmann::json;

namespace {

// note: real headers are a few hundred KB even for 8B models; anything near this is not safetensors.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

std::string in_quotes(const std::string& s) { return "'" + printable(s) + "'"; }

// Short description of an untrusted JSON value; never dumps containers (they may be huge or deep).
std::string describe(const json& v) {
  if (v.is_string()) return "\"" + printable(v.get<std::string>(), 40) + "\"";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return printable(v.dump(), 40);
}

bool parse_dtype(const std::string& s, DType* out) {
  if (s == "F32") *out = DType::F32;
  else if (s == "BF16") *out = DType::BF16;
  else if (s == "F16") *out = DType::F16;
  else return false;
  return true;
}

// A JSON integer >= 0; floats, negatives and non-numbers are rejected.
bool as_u64(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer()) {
    int64_t x = v.get<int64_t>();
    if (x < 0) return false;
    *out = static_cast<uint64_t>(x);
    return true;
  }
  return false;
}

}  // namespace

json parse_checking_duplicates(const char* begin, const char* end, const std::string& nested_key,
                               std::string* duplicate) {
  std::set<std::string> seen;
  std::string top_key;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event != json::parse_event_t::key) return true;
    const std::string& key = parsed.get_ref<const std::string&>();
    if (depth == 1) top_key = key;
    bool watched = nested_key.empty() ? depth == 1 : (depth == 2 && top_key == nested_key);
    if (watched && !seen.insert(key).second && duplicate->empty()) *duplicate = key;
    return true;
  };
  static const char kEmpty[] = "";
  if (begin == nullptr) begin = end = kEmpty;
  return json::parse(begin, end, callback, /*allow_exceptions=*/false);
}

namespace {

uint64_t read_u64_le(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

}  // namespace

std::string printable(const std::string& text, size_t max_chars) {
  std::string out;
  size_t n = text.size();
  bool cut = n > max_chars;
  if (cut) {
    n = max_chars;
    // note: step back to a UTF-8 character boundary so the message stays valid text.
    while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xc0) == 0x80) n--;
  }
  for (size_t i = 0; i < n; i++) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (cut) out += "...";
  return out;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) {
    if (i == 8) {
      s += ", ...";
      break;
    }
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::vector<TensorInfo> parse_safetensors(const void* data, size_t size, const std::string& path) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  if (size < 8) {
    fail_input(path + ": too short for a safetensors file (" + std::to_string(size) +
               " bytes; a safetensors file starts with an 8-byte header length)");
  }
  uint64_t header_bytes = read_u64_le(bytes);
  if (header_bytes > kMaxHeaderBytes) {
    fail_input(path + ": the safetensors header is " + std::to_string(header_bytes) +
               " bytes, over unmask's limit of " + std::to_string(kMaxHeaderBytes) +
               " bytes (100 MiB; real headers are at most a few MB); not a safetensors file?");
  }
  if (header_bytes > size - 8) {
    fail_input(path + ": header length " + std::to_string(header_bytes) +
               " is larger than the rest of the file (" + std::to_string(size - 8) +
               " bytes); the file is truncated or not safetensors");
  }
  const char* header = reinterpret_cast<const char*>(bytes + 8);
  std::string duplicate;
  json j = parse_checking_duplicates(header, header + header_bytes, "", &duplicate);
  if (j.is_discarded()) fail_input(path + ": the safetensors header is not valid JSON");
  if (!j.is_object()) fail_input(path + ": the safetensors header is not a JSON object");
  if (!duplicate.empty()) {
    fail_input(path + ": tensor " + in_quotes(duplicate) + " appears twice in the header");
  }

  const size_t data_start = 8 + static_cast<size_t>(header_bytes);
  const size_t data_bytes = size - data_start;
  std::vector<TensorInfo> infos;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [begin, end) per entry of `infos`
  for (const auto& [name, entry] : j.items()) {
    if (name == "__metadata__") {
      bool ok = entry.is_object();
      if (ok) {
        for (const auto& [key, value] : entry.items()) ok = ok && value.is_string();
      }
      if (!ok) fail_input(path + ": '__metadata__' must be an object of strings");
      continue;
    }
    const std::string where = path + ": tensor " + in_quotes(name) + ": ";
    if (!entry.is_object()) fail_input(where + "entry must be an object (got " + describe(entry) + ")");

    TensorInfo info;
    info.name = name;
    auto it = entry.find("dtype");
    if (it == entry.end()) fail_input(where + "missing 'dtype'");
    if (!it->is_string()) fail_input(where + "'dtype' must be a string (got " + describe(*it) + ")");
    const std::string& dtype = it->get_ref<const std::string&>();
    if (!parse_dtype(dtype, &info.dtype)) {
      fail_input(where + "dtype " + printable(dtype, 20) +
                 " unsupported (unmask reads F32, BF16 and F16)");
    }

    it = entry.find("shape");
    if (it == entry.end()) fail_input(where + "missing 'shape'");
    if (!it->is_array()) {
      fail_input(where + "'shape' must be an array of non-negative integers (got " +
                 describe(*it) + ")");
    }
    bool has_zero = false;
    for (size_t d = 0; d < it->size(); d++) {
      uint64_t dim = 0;
      if (!as_u64((*it)[d], &dim)) {
        fail_input(where + "'shape' dimension " + std::to_string(d) +
                   " must be a non-negative integer (got " + describe((*it)[d]) + ")");
      }
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        fail_input(where + "'shape' dimension " + std::to_string(d) + " is too large");
      }
      has_zero = has_zero || dim == 0;
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    // Element count and byte size, each multiplication checked before it happens.
    uint64_t n_elements = has_zero ? 0 : 1;
    const uint64_t elem_bytes = dtype_bytes(info.dtype);
    const uint64_t max_bytes = std::numeric_limits<size_t>::max();
    for (int64_t dim : info.shape) {
      if (has_zero) break;
      if (n_elements > max_bytes / elem_bytes / static_cast<uint64_t>(dim)) {
        fail_input(where + "shape " + shape_string(info.shape) + " is too large (byte size overflows)");
      }
      n_elements *= static_cast<uint64_t>(dim);
    }
    info.n_bytes = static_cast<size_t>(n_elements * elem_bytes);

    it = entry.find("data_offsets");
    if (it == entry.end()) fail_input(where + "missing 'data_offsets'");
    uint64_t begin = 0, end = 0;
    if (!it->is_array() || it->size() != 2 || !as_u64((*it)[0], &begin) ||
        !as_u64((*it)[1], &end)) {
      fail_input(where + "'data_offsets' must be two non-negative integers [begin, end] (got " +
                 (it->is_array() ? "an array of " + std::to_string(it->size()) : describe(*it)) +
                 ")");
    }
    if (begin > end) {
      fail_input(where + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                 "] has begin > end");
    }
    if (end > data_bytes) {
      fail_input(where + "data_offsets end " + std::to_string(end) +
                 " is beyond the data section (" + std::to_string(data_bytes) +
                 " bytes); the file is truncated?");
    }
    if (end - begin != info.n_bytes) {
      fail_input(where + "data_offsets span " + std::to_string(end - begin) + " bytes but " +
                 dtype_name(info.dtype) + " " + shape_string(info.shape) + " needs " +
                 std::to_string(info.n_bytes) + " bytes");
    }
    info.data = bytes + data_start + begin;
    infos.push_back(std::move(info));
    ranges.emplace_back(begin, end);
  }

  // Overlap check: sort the non-empty ranges; each must start at or after the previous end.
  std::vector<size_t> order;
  for (size_t i = 0; i < infos.size(); i++) {
    if (ranges[i].second > ranges[i].first) order.push_back(i);
  }
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return ranges[a].first < ranges[b].first; });
  for (size_t k = 1; k < order.size(); k++) {
    size_t prev = order[k - 1], cur = order[k];
    if (ranges[cur].first < ranges[prev].second) {
      fail_input(path + ": tensors " + in_quotes(infos[prev].name) + " and " +
                 in_quotes(infos[cur].name) + " overlap in the data section");
    }
  }
  return infos;
}

// --- MappedFile ---------------------------------------------------------------------------------

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_input(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail_input(path + ": cannot stat: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail_input(path + ": not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      fail_input(path + ": cannot mmap " + std::to_string(size_) + " bytes: " + std::strerror(err));
    }
    data_ = p;
  }
  ::close(fd);  // the mapping keeps the file alive
}

MappedFile::~MappedFile() { release(); }

void MappedFile::release() {
  if (data_ != nullptr) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)), data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

// --- TensorStore --------------------------------------------------------------------------------

void TensorStore::add_file(MappedFile file, const std::string& shard) {
  std::vector<TensorInfo> infos = parse_safetensors(file.data(), file.size(), file.path());
  files_.push_back(std::move(file));
  for (TensorInfo& info : infos) {
    auto found = shard_of_.find(info.name);
    if (found != shard_of_.end()) {
      fail_input(source_ + ": tensor " + in_quotes(info.name) + " appears in both " +
                 in_quotes(found->second) + " and " + in_quotes(shard));
    }
    // note: safetensors does not promise per-tensor alignment; kernels read typed pointers, so
    // the rare misaligned tensor is copied out of the mapping.
    if (reinterpret_cast<uintptr_t>(info.data) % dtype_bytes(info.dtype) != 0) {
      std::vector<uint64_t>& copy = aligned_copies_.emplace_back((info.n_bytes + 7) / 8);
      std::memcpy(copy.data(), info.data, info.n_bytes);
      info.data = copy.data();
    }
    shard_of_[info.name] = shard;
    std::string name = info.name;
    tensors_.emplace(std::move(name), std::move(info));
  }
}

TensorStore TensorStore::open_file(const std::string& path) {
  TensorStore store;
  store.source_ = path;
  store.add_file(MappedFile(path), std::filesystem::path(path).filename().string());
  return store;
}

namespace {

// Shard names come from the index file: only plain names of files inside the model directory.
bool plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && name.find('\0') == std::string::npos;
}

}  // namespace

std::string read_whole_file(const std::string& path) {
  MappedFile file(path);
  const char* data = static_cast<const char*>(file.data());
  return data ? std::string(data, file.size()) : std::string();
}

TensorStore TensorStore::open_dir(const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) {
    fail_input(model_dir + (fs::exists(model_dir, ec) ? ": not a directory"
                                                      : ": model directory not found"));
  }
  const fs::path dir(model_dir);
  const fs::path single = dir / "model.safetensors";
  const fs::path index_path = dir / "model.safetensors.index.json";
  if (fs::exists(single, ec)) {
    // transformers' precedence: the single file wins over an index beside it.
    TensorStore store = open_file(single.string());
    if (fs::exists(index_path, ec))
      store.notes_.push_back(single.string() + " and model.safetensors.index.json are both present: using " +
                             "model.safetensors (as transformers does) and ignoring the index and its shards");
    return store;
  }
  if (!fs::exists(index_path, ec)) {
    fail_input(model_dir + ": no model.safetensors or model.safetensors.index.json in the directory");
  }

  const std::string index = index_path.string();
  std::map<std::string, std::string> weight_map;  // tensor -> shard file name
  {
    MappedFile file(index);
    const char* text = static_cast<const char*>(file.data());
    std::string duplicate;
    json j = parse_checking_duplicates(text, text + file.size(), "weight_map", &duplicate);
    if (j.is_discarded()) fail_input(index + ": not valid JSON");
    if (!j.is_object()) fail_input(index + ": not a JSON object");
    auto it = j.find("weight_map");
    if (it == j.end()) fail_input(index + ": missing 'weight_map'");
    if (!it->is_object()) fail_input(index + ": 'weight_map' must be an object {tensor: shard file}");
    if (it->empty()) fail_input(index + ": 'weight_map' is empty");
    if (!duplicate.empty()) {
      fail_input(index + ": tensor " + in_quotes(duplicate) + " is listed twice in 'weight_map'");
    }
    for (const auto& [tensor, shard] : it->items()) {
      if (!shard.is_string()) {
        fail_input(index + ": 'weight_map' entry for tensor " + in_quotes(tensor) +
                   " must be a file name (got " + describe(shard) + ")");
      }
      const std::string& name = shard.get_ref<const std::string&>();
      if (!plain_file_name(name)) {
        fail_input(index + ": shard " + in_quotes(name) + " for tensor " + in_quotes(tensor) +
                   " must be a plain file name inside the model directory");
      }
      weight_map[tensor] = name;
    }
  }

  TensorStore store;
  store.source_ = model_dir;
  std::set<std::string> shards;
  for (const auto& [tensor, shard] : weight_map) shards.insert(shard);
  for (const std::string& shard : shards) {
    const fs::path shard_path = dir / shard;
    if (!fs::exists(shard_path, ec)) {
      fail_input(index + ": shard " + in_quotes(shard) + " is listed in 'weight_map' but not found");
    }
    store.add_file(MappedFile(shard_path.string()), shard);
  }
  for (const auto& [tensor, shard] : weight_map) {
    auto found = store.shard_of_.find(tensor);
    if (found == store.shard_of_.end()) {
      fail_input(index + ": tensor " + in_quotes(tensor) + " is mapped to " + in_quotes(shard) +
                 ", which does not contain it");
    }
    if (found->second != shard) {
      fail_input(index + ": tensor " + in_quotes(tensor) + " is mapped to " + in_quotes(shard) +
                 " but is stored in " + in_quotes(found->second));
    }
  }
  return store;
}

const TensorInfo* TensorStore::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

size_t TensorStore::total_bytes() const {
  size_t total = 0;
  for (const auto& [name, info] : tensors_) total += info.n_bytes;
  return total;
}

}  // namespace unmask
