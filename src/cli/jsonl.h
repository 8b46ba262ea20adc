// JSONL batch records: input lines parsed into requests, output records, and reading back an output.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cli/options.h"

namespace unmask {

// Per-line overrides of the generation options; unset ones keep the command line's values.
struct LineOverrides {
  std::optional<int> gen_length, steps, block_length, top_k;
  std::optional<float> temperature, top_p, cfg_scale, alg_temp;
  std::optional<std::optional<float>> threshold;  // engaged null: threshold off for this line
  std::optional<std::string> remasking, alg;
  std::optional<uint64_t> seed;
  // LLaDA2.1 (--alg llada2): engaged null: no editing threshold for this line (LLaDA2.0's loop,
  // unless an editing preset gives one).
  std::optional<std::optional<float>> editing_threshold;
  std::optional<int> max_post_steps;
  std::optional<std::string> editing_preset;  // "quality" or "speed"; "" (null in the line): none
};

// One non-blank input line.
struct BatchLine {
  int line = 0;              // 1-based line number in the input
  nlohmann::json id;         // string or integer; the line number when absent; null when unreadable
  std::string error;         // non-empty: this line becomes an error record
  std::string prompt;
  nlohmann::json messages;   // null unless the line gave "messages"
  LineOverrides overrides;
};

// How an error message shows a JSON value of the wrong kind: "a string", "an empty array", ...,
// or a number or boolean itself (shortened).
std::string describe_json(const nlohmann::json& v);
// A JSON number as the engine holds it: a float. Values beyond the float range become infinite
// (never undefined behaviour), which the settings validator then refuses naming the key.
float json_float(const nlohmann::json& v);

// Parses one line (without its newline). Never throws: problems become `error`.
BatchLine parse_batch_line(const std::string& text, int line);

// The options of one line: `base` with its overrides applied.
GenerationOptions apply_overrides(GenerationOptions base, const LineOverrides& o);

// A canonical key for a record: its id, so 7 and "7" stay different ids, or "line N" for a line
// whose id could not be read (invalid JSON, a bad id), whose record has id null.
std::string record_key(const nlohmann::json& id, int line);
std::string id_text(const nlohmann::json& id);  // for messages: 7 or "seven"

// Splits input text into lines (\n or \r\n). A final line without newline still counts.
std::vector<std::string> split_lines(const std::string& text);
bool is_blank(const std::string& line);

// What an existing output file already holds, for --resume.
struct ExistingOutput {
  std::map<std::string, bool> ids;  // record_key -> whether its only records are error records
  size_t good_bytes = 0;            // length of the complete, parseable records
  bool torn = false;                // an unterminated or unparseable last line follows them
};

// Reads `path` (missing: empty). A damaged line other than the last one is a fail_input naming it.
ExistingOutput read_existing_output(const std::string& path);

// Rewrites `path` without the error records whose record_key is in `ids` (those --resume runs
// again), through a temporary file in the same directory renamed over it, so a crash leaves the
// old file or the new one, never half of one. Every other line is kept byte for byte.
void drop_records(const std::string& path, const std::set<std::string>& ids);

}  // namespace unmask
