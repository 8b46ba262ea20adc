// TextStream: only final text is released, never retracted, cut at stop ids, stop strings and
// max_tokens; checked on the bundled model's sentencepiece tokenizer.
#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "decode/text_stream.h"
#include "tokenizer/tokenizer.h"

namespace unmask {
namespace {

constexpr int32_t kMask = 1, kEos = 2;  // the bundled model's ids (models/config.json)

struct Replay {
  std::vector<std::string> deltas;
  std::vector<std::string> released;  // the text released after each step
  std::string all() const {
    std::string s;
    for (const std::string& d : deltas) s += d;
    return s;
  }
};

// Commits `answer`'s positions one at a time in `order`, as an unmasking loop would, and feeds
// every intermediate canvas to the stream.
Replay replay(TextStream& stream, const std::vector<int32_t>& prompt, const std::vector<int32_t>& answer,
              const std::vector<size_t>& order) {
  Replay r;
  std::vector<int32_t> canvas(answer.size(), kMask);
  for (size_t k = 0; k < order.size() && !stream.ended(); k++) {
    canvas[order[k]] = answer[order[k]];
    const bool last = k + 1 == order.size();
    r.deltas.push_back(stream.advance(prompt, canvas, last));
    r.released.push_back(stream.text());
  }
  return r;
}

}  // namespace

TEST_CASE("text stream: UTF-8 completeness and stop-string overlap helpers") {
  CHECK(complete_utf8_prefix("abc") == 3);
  CHECK(complete_utf8_prefix("a\xC3") == 1);
  CHECK(complete_utf8_prefix("a\xC3\xA9") == 3);
  CHECK(complete_utf8_prefix("a\xE2\x82") == 1);
  CHECK(complete_utf8_prefix("a\xE2\x82\xAC") == 4);
  CHECK(complete_utf8_prefix("\xF0\x9F\x98") == 0);
  CHECK(complete_utf8_prefix("\xF0\x9F\x98\x80") == 4);
  CHECK(complete_utf8_prefix("") == 0);
  CHECK(stop_prefix_overlap("hello wor", {"world"}) == 3);
  CHECK(stop_prefix_overlap("hello", {"lo!", "xyz"}) == 2);
  CHECK(stop_prefix_overlap("hello", {"xyz"}) == 0);
  CHECK(stop_prefix_overlap("ab", {"ab"}) == 0);  // a whole match is cut, not held back
  CHECK(stop_prefix_overlap("xa", {"ab", "abc"}) == 1);
}

TEST_CASE("text stream: released text grows only, covers only the stable prefix, and ends as the plain text") {
  const auto tok = load_tokenizer(UNMASK_MODELS_DIR);
  const std::vector<int32_t> prompt = tok->wrap_single(tok->encode("And God said"));
  std::vector<int32_t> answer = tok->encode(" unto Moses, Go in unto Pharaoh, and speak unto him; thus saith the LORD.");
  answer.push_back(kEos);
  while (answer.size() < 32) answer.push_back(kEos);
  const std::string plain = decode_continuation(*tok, prompt, answer, {kEos}, false, kMask);
  REQUIRE(!plain.empty());

  std::mt19937 rng(7);
  for (int trial = 0; trial < 20; trial++) {
    std::vector<size_t> order(answer.size());
    std::iota(order.begin(), order.end(), 0);
    if (trial > 0) std::shuffle(order.begin(), order.end(), rng);  // trial 0: left to right
    TextStream stream(*tok, {kEos}, kMask, false, {}, 0);
    const Replay r = replay(stream, prompt, answer, order);
    CAPTURE(trial);
    CHECK(r.all() == plain);
    CHECK(stream.text() == plain);
    CHECK(stream.reason() == FinishReason::Stop);
    // Never retracted: each release extends the previous one and is a prefix of the final text.
    for (size_t i = 0; i < r.released.size(); i++) CHECK(plain.compare(0, r.released[i].size(), r.released[i]) == 0);
  }
  // Only what is stable: with position 0 masked nothing at all is released, whatever follows.
  TextStream stream(*tok, {kEos}, kMask, false, {}, 0);
  std::vector<int32_t> canvas = answer;
  canvas[0] = kMask;
  CHECK(stream.advance(prompt, canvas, false).empty());
  // The last stable token waits for its successor (decoders respell a token by its neighbour).
  canvas = answer;
  std::fill(canvas.begin() + 3, canvas.end(), kMask);
  const std::string three = stream.advance(prompt, canvas, false);
  const std::vector<int32_t> two(answer.begin(), answer.begin() + 2);
  const std::string two_text = decode_continuation(*tok, prompt, two, {kEos}, false, kMask);
  CHECK(three.size() <= two_text.size());
  CHECK(two_text.compare(0, three.size(), three) == 0);
}

TEST_CASE("text stream: a stop string cuts the text, is held back while it may still match, and ends the stream") {
  const auto tok = load_tokenizer(UNMASK_MODELS_DIR);
  const std::vector<int32_t> prompt = tok->wrap_single(tok->encode("And God said"));
  std::vector<int32_t> answer = tok->encode(" Let there be light: and there was light. And God saw the light.");
  const std::string plain = decode_continuation(*tok, prompt, answer, {kEos}, false, kMask);
  const size_t at = plain.find(" and there");
  REQUIRE(at != std::string::npos);

  std::vector<size_t> order(answer.size());
  std::iota(order.begin(), order.end(), 0);
  TextStream stream(*tok, {kEos}, kMask, false, {" and there", "never seen"}, 0);
  const Replay r = replay(stream, prompt, answer, order);
  CHECK(r.all() == plain.substr(0, at));
  CHECK(stream.ended());
  CHECK(stream.reason() == FinishReason::Stop);
  // It ended as soon as the stop string was in the stable text, before the canvas was full.
  CHECK(r.deltas.size() < answer.size());
  // Nothing released ever reached into the stop string.
  for (const std::string& text : r.released) CHECK(text.size() <= at);
  // The tokens counted are those whose text reaches the cut.
  CHECK(stream.tokens() > 0);
  CHECK(stream.tokens() < static_cast<int>(answer.size()));
}

TEST_CASE("text stream: max_tokens ends the text once that many tokens are stable; a stop id ends it too") {
  const auto tok = load_tokenizer(UNMASK_MODELS_DIR);
  const std::vector<int32_t> prompt = tok->wrap_single(tok->encode("In the beginning"));
  const std::vector<int32_t> answer = tok->encode(" God created the heaven and the earth. And the earth was without form");
  REQUIRE(answer.size() > 10);
  const std::vector<int32_t> first8(answer.begin(), answer.begin() + 8);
  TextStream capped(*tok, {kEos}, kMask, false, {}, 8);
  std::vector<int32_t> canvas(answer.size(), kMask);
  std::copy(answer.begin(), answer.begin() + 8, canvas.begin());
  const std::string text = capped.advance(prompt, canvas, false);
  CHECK(capped.ended());
  CHECK(capped.reason() == FinishReason::Length);
  CHECK(text == decode_continuation(*tok, prompt, first8, {kEos}, false, kMask));
  CHECK(capped.tokens() == 8);
  CHECK(capped.advance(prompt, answer, true).empty());  // nothing after the end

  std::vector<int32_t> with_eos = first8;
  with_eos.push_back(kEos);
  with_eos.insert(with_eos.end(), answer.begin() + 8, answer.end());
  TextStream stopped(*tok, {kEos}, kMask, false, {}, 0);
  canvas.assign(with_eos.size(), kMask);
  std::copy(with_eos.begin(), with_eos.begin() + 9, canvas.begin());
  const std::string before_eos = stopped.advance(prompt, canvas, false);
  CHECK(stopped.ended());
  CHECK(stopped.reason() == FinishReason::Stop);
  CHECK(before_eos == decode_continuation(*tok, prompt, first8, {kEos}, false, kMask));

  // A canvas that ran out without an end of text: "length".
  TextStream full(*tok, {kEos}, kMask, false, {}, 0);
  CHECK(full.advance(prompt, answer, true) == decode_continuation(*tok, prompt, answer, {kEos}, false, kMask));
  CHECK(full.reason() == FinishReason::Length);
}

TEST_CASE("text stream: nothing is released while a mask written in the prompt is unfilled") {
  const auto tok = load_tokenizer(UNMASK_MODELS_DIR);
  std::vector<int32_t> prompt = tok->wrap_single(tok->encode("And God said unto Moses"));
  const int32_t hole = prompt[2];
  prompt[2] = kMask;
  const std::vector<int32_t> answer = tok->encode(" Go in unto Pharaoh");
  TextStream stream(*tok, {kEos}, kMask, false, {}, 0);
  CHECK(stream.advance(prompt, answer, false).empty());
  prompt[2] = hole;
  CHECK(!stream.advance(prompt, answer, false).empty());
}

}  // namespace unmask
