// Hostile-input parsing of JSONL batch lines and of an output file being resumed.
#include "cli/jsonl.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

#include "common.h"
#include "io/safetensors.h"  // printable()

namespace unmask {

using json = nlohmann::json;

namespace {

// Every key a line may hold (the error for an unknown one lists them).
const char* kKnownKeys[] = {"id",        "prompt",         "messages",    "gen_length",
                            "steps",     "block_length",   "remasking",   "temperature",
                            "top_k",     "top_p",          "cfg_scale",   "threshold",
                            "seed",      "alg",            "alg_temp",    "editing_threshold",
                            "max_post_steps", "editing_preset"};

std::string known_keys() {
  std::string s;
  for (const char* k : kKnownKeys) s += (s.empty() ? "" : ", ") + std::string(k);
  return s;
}

// Thrown inside parse_batch_line only; becomes the record's error.
struct LineError {
  std::string message;
};

[[noreturn]] void bad(const std::string& key, const std::string& want, const json& v) {
  throw LineError{"'" + key + "' must be " + want + " (got " + describe_json(v) + ")"};
}

int int_field(const std::string& key, const json& v) {
  if (!v.is_number_integer()) bad(key, "an integer", v);
  if (v.is_number_unsigned() ? v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int>::max())
                             : (v.get<int64_t>() > std::numeric_limits<int>::max() ||
                                v.get<int64_t>() < std::numeric_limits<int>::min()))
    bad(key, "an integer that fits 32 bits", v);
  return v.get<int>();
}

float number_field(const std::string& key, const json& v) {
  if (!v.is_number()) bad(key, "a number", v);
  return json_float(v);
}

void parse_fields(const json& j, BatchLine& out) {
  for (const auto& [key, value] : j.items()) {
    bool known = false;
    for (const char* k : kKnownKeys) known = known || key == k;
    if (!known) throw LineError{"unknown key '" + printable(key, 40) + "' (known: " + known_keys() + ")"};
  }
  auto it = j.find("prompt");
  auto messages = j.find("messages");
  if (it != j.end() && messages != j.end()) throw LineError{"give either 'prompt' or 'messages', not both"};
  if (it != j.end()) {
    if (!it->is_string()) bad("prompt", "a string", *it);
    out.prompt = it->get<std::string>();
  } else if (messages != j.end()) {
    if (!messages->is_array() || messages->empty()) bad("messages", "a non-empty array", *messages);
    for (const json& m : *messages) {
      if (!m.is_object() || !m.contains("role") || !m.contains("content") || !m["role"].is_string() ||
          !m["content"].is_string() || m.size() != 2)
        throw LineError{"each of 'messages' must be an object with string 'role' and 'content' and no other key"};
      const std::string& role = m["role"].get_ref<const std::string&>();
      if (role != "system" && role != "user" && role != "assistant")
        throw LineError{"a message's 'role' must be system, user or assistant (got \"" + printable(role, 40) + "\")"};
    }
    out.messages = *messages;
  } else {
    throw LineError{"missing 'prompt' (or 'messages')"};
  }

  LineOverrides& o = out.overrides;
  for (const auto& [key, value] : j.items()) {
    if (key == "gen_length") o.gen_length = int_field(key, value);
    else if (key == "steps") o.steps = int_field(key, value);
    else if (key == "block_length") o.block_length = int_field(key, value);
    else if (key == "top_k") o.top_k = int_field(key, value);
    else if (key == "temperature") o.temperature = number_field(key, value);
    else if (key == "top_p") o.top_p = number_field(key, value);
    else if (key == "cfg_scale") o.cfg_scale = number_field(key, value);
    else if (key == "alg_temp") o.alg_temp = number_field(key, value);
    else if (key == "threshold")
      o.threshold = value.is_null() ? std::optional<float>() : std::optional<float>(number_field(key, value));
    else if (key == "editing_threshold")
      o.editing_threshold = value.is_null() ? std::optional<float>() : std::optional<float>(number_field(key, value));
    else if (key == "max_post_steps") o.max_post_steps = int_field(key, value);
    else if (key == "editing_preset") {
      // The names are checked here: the resolver takes any other string for quality.
      if (value.is_null()) {
        o.editing_preset = "";
      } else if (!value.is_string()) {
        bad(key, "\"quality\" or \"speed\"", value);
      } else if (value != "quality" && value != "speed") {
        throw LineError{"'editing_preset' must be \"quality\" or \"speed\" (got \"" +
                        printable(value.get<std::string>(), 40) + "\")"};
      } else {
        o.editing_preset = value.get<std::string>();
      }
    }
    else if (key == "remasking" || key == "alg") {
      if (!value.is_string()) bad(key, "a string", value);
      (key == "alg" ? o.alg : o.remasking) = value.get<std::string>();
    } else if (key == "seed") {
      if (!value.is_number_unsigned() && !(value.is_number_integer() && value.get<int64_t>() >= 0))
        bad(key, "a non-negative integer", value);
      o.seed = value.get<uint64_t>();
    }
  }
}

}  // namespace

std::string describe_json(const json& v) {
  switch (v.type()) {
    case json::value_t::string: return "a string";
    case json::value_t::array: return v.empty() ? "an empty array" : "an array";
    case json::value_t::object: return "an object";
    case json::value_t::null: return "null";
    default: return printable(v.dump(), 40);  // numbers and booleans: the value itself
  }
}

float json_float(const json& v) {
  const double d = v.get<double>();
  if (std::isfinite(d) && std::fabs(d) > static_cast<double>(std::numeric_limits<float>::max()))
    return d > 0 ? std::numeric_limits<float>::infinity() : -std::numeric_limits<float>::infinity();
  return static_cast<float>(d);
}

BatchLine parse_batch_line(const std::string& text, int line) {
  BatchLine out;
  out.line = line;
  out.id = nullptr;  // a line whose id cannot be read is keyed by its line number (record_key)
  std::string duplicate;
  json j = parse_checking_duplicates(text.data(), text.data() + text.size(), "", &duplicate);
  if (j.is_discarded()) {
    out.error = "invalid JSON";
    try {
      [[maybe_unused]] const json reparsed = json::parse(text);  // throws with the position
    } catch (const json::parse_error& e) {
      // "[json.exception.parse_error.101] parse error at line 1, column 9: ..." -> from "line".
      const std::string what = e.what();
      const size_t at = what.find("at line");
      if (at != std::string::npos) out.error += " " + printable(what.substr(at), 160);
    }
    return out;
  }
  if (!j.is_object()) {
    out.error = "not a JSON object (got " + describe_json(j) + ")";
    return out;
  }
  if (auto id = j.find("id"); id != j.end()) {
    if (id->is_string() || id->is_number_integer()) {
      out.id = *id;
    } else {
      out.error = "'id' must be a string or an integer (got " + describe_json(*id) + ")";
      return out;
    }
  } else {
    out.id = line;  // documented default
  }
  if (!duplicate.empty()) {
    out.error = "key '" + printable(duplicate, 40) + "' appears twice";
    return out;
  }
  try {
    parse_fields(j, out);
  } catch (const LineError& e) {
    out.error = e.message;
  }
  return out;
}

GenerationOptions apply_overrides(GenerationOptions base, const LineOverrides& o) {
  if (o.gen_length) base.gen_length = *o.gen_length;
  if (o.steps) base.steps = *o.steps;
  if (o.block_length) base.block_length = *o.block_length;
  if (o.top_k) base.top_k = *o.top_k;
  if (o.temperature) base.temperature = *o.temperature;
  if (o.top_p) base.top_p = *o.top_p;
  if (o.cfg_scale) base.cfg_scale = *o.cfg_scale;
  if (o.threshold) base.threshold = *o.threshold;
  if (o.remasking) base.remasking = *o.remasking;
  if (o.alg) base.alg = *o.alg;
  if (o.alg_temp) base.alg_temp = *o.alg_temp;
  if (o.seed) base.seed = *o.seed;
  if (o.editing_threshold) base.editing_threshold = *o.editing_threshold;
  if (o.max_post_steps) base.max_post_steps = *o.max_post_steps;
  if (o.editing_preset) base.editing_preset = *o.editing_preset;
  return base;
}

namespace {
int line_of(const json& record) {
  auto it = record.find("line");
  return it != record.end() && it->is_number_integer() ? it->get<int>() : 0;
}
}  // namespace

std::string record_key(const json& id, int line) {
  return id.is_null() ? "line " + std::to_string(line) : id.dump();
}

std::string id_text(const json& id) { return id.is_string() ? printable(id.get<std::string>(), 60) : id.dump(); }

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    start = end + 1;
  }
  return lines;
}

bool is_blank(const std::string& line) {
  return line.find_first_not_of(" \t\r\f\v") == std::string::npos;
}

ExistingOutput read_existing_output(const std::string& path) {
  ExistingOutput out;
  std::ifstream in(path, std::ios::binary);
  if (!in) return out;
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t start = 0;
  int line = 0;
  while (start < text.size()) {
    line++;
    const size_t end = text.find('\n', start);
    const bool terminated = end != std::string::npos;
    const std::string record = text.substr(start, (terminated ? end : text.size()) - start);
    const size_t next = terminated ? end + 1 : text.size();
    start = next;
    if (terminated && is_blank(record)) {
      out.good_bytes = next;
      continue;
    }
    json j = json::parse(record, nullptr, /*allow_exceptions=*/false);
    if (!terminated || j.is_discarded() || !j.is_object() || !j.contains("id")) {
      // A crash mid-write leaves at most the last line torn; damage earlier is not ours to fix.
      if (!is_blank(text.substr(next)))
        fail_input(path + ":" + std::to_string(line) +
                   ": not a complete output record; only a torn last line can be resumed over");
      out.torn = true;
      return out;
    }
    const std::string key = record_key(j["id"], line_of(j));
    // A result wins over an error record for the same id, whatever their order.
    auto [it, fresh] = out.ids.emplace(key, j.contains("error"));
    if (!fresh) it->second = it->second && j.contains("error");
    out.good_bytes = next;
  }
  return out;
}

void drop_records(const std::string& path, const std::set<std::string>& ids) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_input(path + ": cannot read the output to rewrite it (" + std::strerror(errno) + ")");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string kept;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    end = end == std::string::npos ? text.size() : end + 1;
    const std::string line = text.substr(start, end - start);
    start = end;
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_discarded() && j.is_object() && j.contains("id") && j.contains("error") &&
        ids.count(record_key(j["id"], line_of(j))))
      continue;
    kept += line;
  }
  const std::string tmp = path + ".rewrite." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail_input(tmp + ": cannot write (" + std::strerror(errno) + ")");
  size_t done = 0;
  while (done < kept.size()) {
    const ssize_t n = ::write(fd, kept.data() + done, kept.size() - done);
    if (n <= 0) {
      ::close(fd);
      std::remove(tmp.c_str());
      fail_runtime(tmp + ": cannot write (disk full?)");
    }
    done += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    fail_runtime(path + ": cannot replace it with its rewrite (" + std::strerror(errno) + ")");
  }
}

}  // namespace unmask
