// tokenizer.json parsing that moves model.vocab / model.merges entries into vectors as they are
// read (nlohmann's parser callback), keeping the rest of the file as a DOM.
#include "tokenizer/bpe_json.h"

namespace unmask::bpe_json {

TokenizerJson parse_tokenizer_json(const std::string& path) {
  const std::string text = read_file(path);
  TokenizerJson out;
  // key[d]: the key being read at depth d (keys of objects whose members sit at depth d);
  // object[d]: whether the container at depth d is an object.
  std::vector<std::string> key(4);
  std::vector<char> object(4, 0);
  std::string pending_piece;
  size_t n_merges = 0;
  auto in = [&](const char* container, bool is_object, int depth) {
    return depth == 3 && object[1] && object[2] && key[1] == "model" && key[2] == container &&
           static_cast<bool>(object[3]) == is_object;
  };
  auto merge_key = [&] { return "key 'model.merges[" + std::to_string(n_merges) + "]'"; };
  using Event = json::parse_event_t;
  auto callback = [&](int depth, Event event, json& parsed) -> bool {
    const auto d = static_cast<size_t>(depth);
    if (d + 2 > key.size()) {
      key.resize(d + 2);
      object.resize(d + 2);
    }
    switch (event) {
      case Event::object_start:
      case Event::array_start:
        key[d + 1].clear();
        object[d + 1] = event == Event::object_start;
        if (d == 2 && object[1] && object[2] && key[1] == "model") {
          if (key[2] == "vocab" && event == Event::object_start) out.vocab_streamed = true;
          if (key[2] == "merges" && event == Event::array_start) out.merges_streamed = true;
        }
        if (in("vocab", true, depth))
          fail_input(path + ": key 'model.vocab." + pending_piece + "' must be an integer in [0, 2^31)");
        if (in("merges", false, depth) && event == Event::object_start)
          fail_input(path + ": " + merge_key() + " must be \"left right\" or [left, right]");
        return true;
      case Event::key:
        if (in("vocab", true, depth)) {
          pending_piece = std::move(parsed.get_ref<std::string&>());
          return false;
        }
        key[d] = parsed.get<std::string>();
        return true;
      case Event::value:
        if (in("vocab", true, depth)) {
          if (!is_id(parsed))
            fail_input(path + ": key 'model.vocab." + pending_piece + "' must be an integer in [0, 2^31)");
          out.vocab.emplace_back(std::move(pending_piece), parsed.get<int32_t>());
          return false;
        }
        if (in("merges", false, depth)) {
          // The older form "left right": exactly one space, as HF requires.
          const std::string* line = parsed.is_string() ? &parsed.get_ref<const std::string&>() : nullptr;
          const size_t space = line ? line->find(' ') : std::string::npos;
          if (space == std::string::npos || line->find(' ', space + 1) != std::string::npos)
            fail_input(path + ": " + merge_key() + " must be two pieces separated by one space");
          out.merges.emplace_back(line->substr(0, space), line->substr(space + 1));
          n_merges++;
          return false;
        }
        return true;
      case Event::array_end:
        if (in("merges", false, depth)) {
          if (parsed.size() != 2 || !parsed[0].is_string() || !parsed[1].is_string())
            fail_input(path + ": " + merge_key() + " must be \"left right\" or [left, right]");
          out.merges.emplace_back(std::move(parsed[0].get_ref<std::string&>()),
                                  std::move(parsed[1].get_ref<std::string&>()));
          n_merges++;
          return false;
        }
        return true;
      case Event::object_end:
        return true;
    }
    return true;
  };
  try {
    out.doc = json::parse(text, callback);
  } catch (const json::parse_error& e) {
    fail_input(path + ": not valid JSON (error at byte " + std::to_string(e.byte) + ")");
  }
  return out;
}

std::vector<std::pair<std::string, int32_t>> parse_vocab_json(const std::string& path) {
  const std::string text = read_file(path);
  std::vector<std::pair<std::string, int32_t>> vocab;
  std::string pending_piece;
  bool top_is_object = false;
  using Event = json::parse_event_t;
  auto callback = [&](int depth, Event event, json& parsed) -> bool {
    if (depth == 0 && event == Event::object_start) top_is_object = true;
    if (depth != 1 || !top_is_object) return true;
    if (event == Event::key) {
      pending_piece = std::move(parsed.get_ref<std::string&>());
      return false;
    }
    if (event == Event::value && is_id(parsed)) {
      vocab.emplace_back(std::move(pending_piece), parsed.get<int32_t>());
      return false;
    }
    if (event == Event::value || event == Event::object_start || event == Event::array_start)
      fail_input(path + ": key '" + pending_piece + "' must be an integer in [0, 2^31)");
    return true;
  };
  json doc;
  try {
    doc = json::parse(text, callback);
  } catch (const json::parse_error& e) {
    fail_input(path + ": not valid JSON (error at byte " + std::to_string(e.byte) + ")");
  }
  if (!doc.is_object()) fail_input(path + ": the top level must be an object of piece -> id");
  return vocab;
}

}  // namespace unmask::bpe_json
