// safetensors reading: a validating header parser, read-only file mappings, and the tensor store
// of a model directory (one file or shards listed in model.safetensors.index.json).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/tensor.h"

namespace unmask {

// One tensor of a safetensors file; `data` points into the mapping (or into a TensorStore-owned
// copy when the file placed the tensor at an address misaligned for its dtype).
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;   // as stored, e.g. [out, in] for a matrix, [n] for a vector
  const void* data = nullptr;
  size_t n_bytes = 0;
};

// RAII read-only mmap (MAP_PRIVATE, PROT_READ) of a whole file. Move-only.
// An empty file maps to data() == nullptr, size() == 0.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // fail_input naming the path on any failure
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const void* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release();
  std::string path_;
  void* data_ = nullptr;
  size_t size_ = 0;
};

// A whole file's bytes (through MappedFile): every model-directory file is read this way, so a
// missing file, a directory or an unreadable one is the same one-line fail_input naming it.
std::string read_whole_file(const std::string& path);

// All tensors of a model, memory-mapped and validated. Move-only: moving keeps every mapping (and
// so every TensorInfo::data pointer) where it is.
class TensorStore {
 public:
  // model.safetensors, else model.safetensors.index.json (+ its shards).
  static TensorStore open_dir(const std::string& model_dir);
  // One .safetensors file.
  static TensorStore open_file(const std::string& path);

  const TensorInfo* find(const std::string& name) const;  // nullptr if absent
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  size_t total_bytes() const;
  // The file or directory the tensors came from, for error messages.
  const std::string& source() const { return source_; }
  // Choices made while opening that the user should hear of (e.g. which of two files was used).
  const std::vector<std::string>& notes() const { return notes_; }

  TensorStore(TensorStore&&) noexcept = default;
  TensorStore& operator=(TensorStore&&) noexcept = default;
  TensorStore(const TensorStore&) = delete;
  TensorStore& operator=(const TensorStore&) = delete;

 private:
  TensorStore() = default;
  // Adds the tensors of one mapped file; `shard` (the file name) is used in duplicate messages.
  void add_file(MappedFile file, const std::string& shard);

  std::string source_;
  std::vector<MappedFile> files_;
  std::vector<std::vector<uint64_t>> aligned_copies_;  // see TensorInfo::data
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> shard_of_;        // tensor name -> file it came from
  std::vector<std::string> notes_;
};

// Parses and validates a safetensors image already in memory (used by TensorStore and the fuzz
// target). Never reads outside [data, data + size). `path` is only used in error messages.
std::vector<TensorInfo> parse_safetensors(const void* data, size_t size, const std::string& path);

// Parses a JSON document (discarded when invalid), reporting in *duplicate the first key that
// repeats among the keys of the top-level object (or, with `nested_key`, among the keys of the
// object under that top-level key); nlohmann would otherwise keep the last value silently.
nlohmann::json parse_checking_duplicates(const char* begin, const char* end, const std::string& nested_key,
                                         std::string* duplicate);

// A printable, single-line, length-capped rendering of untrusted text for error messages.
std::string printable(const std::string& text, size_t max_chars = 80);
// "[4096, 128]" (at most 8 dims shown), for messages.
std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace unmask
