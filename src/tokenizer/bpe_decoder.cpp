// Decoder steps, each a token-list -> token-list transform as HF's decode_chain.
#include "tokenizer/bpe_decoder.h"

#include "tokenizer/bpe_normalizer.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/unicode.h"

namespace unmask {
namespace {

using Tokens = std::vector<std::string>;

Tokens byte_level_step(const Tokens& tokens) {
  std::string bytes;
  for (const std::string& t : tokens)
    if (!byte_level::decode(t, bytes)) bytes += t;
  return {unicode::repair_utf8(bytes)};
}

// "<0x41>" -> 0x41; -1 for any other token.
int byte_token(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  const int hi = hex(t[3]), lo = hex(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

Tokens byte_fallback_step(const Tokens& tokens) {
  Tokens out;
  std::string pending;
  auto flush = [&] {
    if (pending.empty()) return;
    // note: HF keeps the bytes only when all of them form valid UTF-8; else one U+FFFD per byte.
    if (unicode::is_valid_utf8(pending)) out.push_back(pending);
    else
      for (size_t i = 0; i < pending.size(); i++) out.push_back("\xEF\xBF\xBD");
    pending.clear();
  };
  for (const std::string& t : tokens) {
    const int b = byte_token(t);
    if (b >= 0) {
      pending += static_cast<char>(b);
    } else {
      flush();
      out.push_back(t);
    }
  }
  flush();
  return out;
}

// Up to `start` leading and `stop` trailing copies of the character `c` removed from each token.
Tokens strip_step(const Tokens& tokens, const std::string& c, size_t start, size_t stop) {
  Tokens out;
  for (const std::string& t : tokens) {
    size_t begin = 0, end = t.size();
    for (size_t n = 0; n < start && end - begin >= c.size() && t.compare(begin, c.size(), c) == 0; n++)
      begin += c.size();
    for (size_t n = 0; n < stop && end - begin >= c.size() && t.compare(end - c.size(), c.size(), c) == 0; n++)
      end -= c.size();
    out.push_back(t.substr(begin, end - begin));
  }
  return out;
}

Tokens metaspace_step(const Tokens& tokens, const std::string& replacement, bool prepend) {
  Tokens out;
  for (size_t i = 0; i < tokens.size(); i++) {
    const std::string& t = tokens[i];
    std::string s;
    for (size_t k = 0; k < t.size();) {
      if (!replacement.empty() && t.compare(k, replacement.size(), replacement) == 0) {
        // note: HF drops every replacement character of the first token, not only a leading one.
        if (!(i == 0 && prepend)) s += ' ';
        k += replacement.size();
      } else {
        s += t[k++];
      }
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

std::string decode_tokens(const std::vector<DecoderStep>& steps, std::vector<std::string> tokens) {
  if (steps.empty()) {
    std::string joined;
    for (size_t i = 0; i < tokens.size(); i++) joined += (i ? " " : "") + tokens[i];
    return joined;
  }
  for (const DecoderStep& step : steps) {
    switch (step.kind) {
      case DecoderStep::Kind::kByteLevel: tokens = byte_level_step(tokens); break;
      case DecoderStep::Kind::kReplace:
        for (std::string& t : tokens) t = replace_all(*step.pattern, t, step.content);
        break;
      case DecoderStep::Kind::kByteFallback: tokens = byte_fallback_step(tokens); break;
      case DecoderStep::Kind::kFuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens = {all};
        break;
      }
      case DecoderStep::Kind::kStrip:
        tokens = strip_step(tokens, step.content, step.strip_start, step.strip_stop);
        break;
      case DecoderStep::Kind::kMetaspace:
        tokens = metaspace_step(tokens, step.content, step.metaspace_prepend);
        break;
    }
  }
  std::string text;
  for (const std::string& t : tokens) text += t;
  return text;
}

}  // namespace unmask
