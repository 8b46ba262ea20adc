// TextStream: the final text of a partly unmasked answer, released once and never retracted.
#include "decode/text_stream.h"

#include <algorithm>

#include "decode/sampler.h"  // text_length

namespace unmask {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::None: break;
  }
  return "";
}

size_t complete_utf8_prefix(const std::string& text) {
  // Walk back over at most 3 continuation bytes to the last lead byte; keep its character only
  // when all of its bytes are there.
  size_t i = text.size();
  size_t back = 0;
  while (i > 0 && back < 4 && (static_cast<unsigned char>(text[i - 1]) & 0xC0) == 0x80) {
    i--;
    back++;
  }
  if (i == 0) return back == 0 ? 0 : text.size();  // only continuation bytes: nothing to wait for
  const unsigned char lead = static_cast<unsigned char>(text[i - 1]);
  size_t need = 1;
  if (lead >= 0xF0 && lead < 0xF8) need = 4;
  else if (lead >= 0xE0) need = 3;
  else if (lead >= 0xC0) need = 2;
  else return text.size();  // ASCII last: complete
  return back + 1 >= need ? text.size() : i - 1;
}

size_t stop_prefix_overlap(const std::string& text, const std::vector<std::string>& stops) {
  size_t best = 0;
  for (const std::string& s : stops) {
    for (size_t n = std::min(s.size() - 1, text.size()); n > best; n--) {
      if (text.compare(text.size() - n, n, s, 0, n) == 0) {
        best = n;
        break;
      }
    }
  }
  return best;
}

TextStream::TextStream(const Tokenizer& tokenizer, std::vector<int32_t> stop_ids, int32_t mask_id,
                       bool keep_special, std::vector<std::string> stop_strings, int max_tokens)
    : tokenizer_(tokenizer),
      stop_ids_(std::move(stop_ids)),
      mask_id_(mask_id),
      keep_special_(keep_special),
      stop_strings_(std::move(stop_strings)),
      max_tokens_(max_tokens) {
  std::erase_if(stop_strings_, [](const std::string& s) { return s.empty(); });
}

std::string TextStream::decode(const std::vector<int32_t>& prompt, const std::vector<int32_t>& answer,
                               size_t n) const {
  const std::vector<int32_t> head(answer.begin(), answer.begin() + static_cast<std::ptrdiff_t>(n));
  return decode_continuation(tokenizer_, prompt, head, stop_ids_, keep_special_, mask_id_);
}

void TextStream::release(const std::string& text) {
  // note: a decoder that respelt released text (never seen with the held-back last token) cannot
  // be undone; what was released stands and the rest waits for text that extends it.
  if (text.size() > released_.size() && text.compare(0, released_.size(), released_) == 0)
    released_ = text;
}

std::string TextStream::advance(const std::vector<int32_t>& filled_prompt,
                                const std::vector<int32_t>& answer, bool finished) {
  if (ended()) return "";
  if (!finished && std::find(filled_prompt.begin(), filled_prompt.end(), mask_id_) != filled_prompt.end())
    return "";
  size_t stable = 0;
  while (stable < answer.size() && answer[stable] != mask_id_) stable++;
  if (finished) stable = answer.size();
  const size_t limit =
      max_tokens_ > 0 ? std::min(answer.size(), static_cast<size_t>(max_tokens_)) : answer.size();
  size_t end = std::min(stable, limit);
  FinishReason reason = FinishReason::None;
  // The first stop id of the whole answer is the first of its stable part when it lies there.
  if (const size_t first_stop = static_cast<size_t>(text_length(answer, stop_ids_)); first_stop < end) {
    end = first_stop;
    reason = FinishReason::Stop;
  }
  if (reason == FinishReason::None && (stable >= limit || finished)) reason = FinishReason::Length;

  const bool final = reason != FinishReason::None;
  std::string text;
  if (final) {
    text = decode(filled_prompt, answer, end);
  } else if (end > 0) {
    text = decode(filled_prompt, answer, end - 1);
    text.resize(complete_utf8_prefix(text));
    for (;;) {
      if (!text.empty() && (text.back() == ' ' || text.back() == '\n' || text.back() == '\t' ||
                            text.back() == '\r')) {
        text.pop_back();
      } else if (text.size() >= 3 && text.compare(text.size() - 3, 3, "\xEF\xBF\xBD") == 0) {
        text.resize(text.size() - 3);
      } else {
        break;
      }
    }
  }
  size_t cut = std::string::npos;
  for (const std::string& s : stop_strings_) cut = std::min(cut, text.find(s));
  const bool stopped_by_string = cut != std::string::npos;
  if (stopped_by_string) {
    text.resize(cut);
    reason = FinishReason::Stop;
  } else if (!final) {
    text.resize(text.size() - stop_prefix_overlap(text, stop_strings_));
  }
  const size_t before = released_.size();
  release(text);
  if (reason != FinishReason::None) {
    reason_ = reason;
    // The tokens the text covers: all `end` of them, or, cut at a stop string, the fewest whose
    // text reaches the cut.
    tokens_ = static_cast<int>(end);
    if (stopped_by_string) {
      for (size_t k = 0; k <= end; k++) {
        if (decode(filled_prompt, answer, k).size() >= released_.size()) {
          tokens_ = static_cast<int>(k);
          break;
        }
      }
    }
  }
  return released_.substr(before);
}

}  // namespace unmask
