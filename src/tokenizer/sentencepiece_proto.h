// Rewrites a serialized sentencepiece ModelProto so that special pieces written in the text are
// matched as sentencepiece matches its user-defined symbols.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace unmask {

struct SpecialMatchingProto {
  std::string serialized;   // the rewritten ModelProto
  int32_t unk_alias = -1;   // id of the appended "<unk>"-text piece (stands for the unknown id)
};

// `model` is the bytes of a tokenizer.model that sentencepiece already loaded. Every CONTROL
// piece (<s>, </s>, ...) becomes USER_DEFINED, so its text in a prompt encodes to its id; the
// UNKNOWN piece cannot change type, so it is renamed and a USER_DEFINED piece with its text is
// appended (unk_alias): the caller maps that id back to the unknown id, and the unknown id to it
// when decoding. Ids of all other pieces are unchanged. The protobuf wire format is read with
// bounds checks; a field it cannot walk is a fail_input naming `path`.
SpecialMatchingProto special_matching_proto(std::string_view model, const std::string& path);

}  // namespace unmask
