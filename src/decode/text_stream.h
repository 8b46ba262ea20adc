// The text of an answer that can no longer change, released as the unmasking loop commits it:
// what `unmask generate --stream` prints and what the server streams as server-sent events.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace unmask {

// Why an answer's text ended (OpenAI's finish_reason): a stop token or stop string ("stop"), or
// the token limit or the canvas running out ("length").
enum class FinishReason { None, Stop, Length };
const char* finish_reason_name(FinishReason r);  // "stop", "length"; "" for None

// A diffusion LM fills positions out of order, and a committed token never changes (LLaDA2.1's
// editing aside: Sampler::final_answer shows the block it may still rewrite as masks), so the
// longest run of committed tokens from the answer's start (the stable prefix) is final. Its text
// is released at most once and never retracted:
// - only complete UTF-8 leaves (a byte-fallback character split across tokens waits);
// - the last stable token's text, trailing whitespace and a trailing U+FFFD wait for the next
//   token, since some decoders respell a token's text by its neighbours (clean-up of spaces
//   before punctuation, sentencepiece's word-boundary space);
// - text that a stop string could still match waits until it cannot.
// The text is decode_continuation of the filled prompt and the answer, cut at the first stop id,
// the first `max_tokens` tokens, or the first stop string (which is left out, as OpenAI does).
// Nothing is released while a mask written in the prompt is unfilled, since the prompt's text
// decides how the answer's first piece is spelled.
class TextStream {
 public:
  // `stop_ids`: the model's end-of-text ids; `mask_id`: kept visible when a finished answer
  // still holds masks; `max_tokens` <= 0: no limit but the answer's length.
  TextStream(const Tokenizer& tokenizer, std::vector<int32_t> stop_ids, int32_t mask_id,
             bool keep_special, std::vector<std::string> stop_strings, int max_tokens);

  // The canvas after a step: the prompt as filled and the answer (masks where not yet
  // committed). `finished`: the loop is over, so everything left is released. Returns the text
  // newly final (often empty).
  std::string advance(const std::vector<int32_t>& filled_prompt, const std::vector<int32_t>& answer,
                      bool finished);

  // The text ended before the answer did (stop token, stop string, max_tokens inside the stable
  // prefix): the loop need not run further, nothing more will be released.
  bool ended() const { return reason_ != FinishReason::None; }
  // After advance(..., true) or once ended(): why the text ended.
  FinishReason reason() const { return reason_; }
  const std::string& text() const { return released_; }  // everything released so far
  // Answer tokens that the released text covers (usage.completion_tokens).
  int tokens() const { return tokens_; }

 private:
  // decode_continuation of `prompt` and the first `n` answer tokens.
  std::string decode(const std::vector<int32_t>& prompt, const std::vector<int32_t>& answer, size_t n) const;
  void release(const std::string& text);

  const Tokenizer& tokenizer_;
  std::vector<int32_t> stop_ids_;
  int32_t mask_id_;
  bool keep_special_;
  std::vector<std::string> stop_strings_;
  int max_tokens_;
  std::string released_;
  int tokens_ = 0;
  FinishReason reason_ = FinishReason::None;
};

// Bytes of `text` that form complete UTF-8 characters from its start (a cut before a trailing
// lead byte or unfinished sequence).
size_t complete_utf8_prefix(const std::string& text);
// The length of the longest suffix of `text` that is a proper prefix of one of `stops`: text a
// stop string could still complete.
size_t stop_prefix_overlap(const std::string& text, const std::vector<std::string>& stops);

}  // namespace unmask
