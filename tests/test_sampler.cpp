// Unit tests of the unmasking schedule, the commit rules and settings validation.
#include <doctest/doctest.h>

#include "common.h"
#include "decode/dream_schedule.h"
#include "decode/sampler.h"
#include "fixtures.h"

using namespace unmask;

namespace {
ModelConfig small_config() { return unmask::test::small_llada_config(); }
PickResult pick(int32_t token, float prob) {
  PickResult r;
  r.token = token;
  r.prob = prob;
  return r;
}
}  // namespace

TEST_CASE("transfer counts spread the remainder over the first steps") {
  CHECK(transfer_counts(10, 4) == std::vector<int>{3, 3, 2, 2});
  CHECK(transfer_counts(8, 8) == std::vector<int>(8, 1));
  CHECK(transfer_counts(3, 5) == std::vector<int>{1, 1, 1, 0, 0});
  CHECK(transfer_counts(0, 2) == std::vector<int>{0, 0});
}

TEST_CASE("threshold rule: the schedule is a floor, the best position always commits") {
  const std::vector<float> conf = {0.2f, 0.95f, 0.5f, 0.91f};
  CHECK(commit_count(conf, 1, std::nullopt) == 1);
  CHECK(commit_count(conf, 1, 0.9f) == 2);       // two above the threshold
  CHECK(commit_count(conf, 0, 0.99f) == 1);      // none above: the most confident alone
  CHECK(commit_count(conf, 0, 0.1f) == 4);       // all above
  CHECK(commit_count(conf, 3, 0.9f) == 3);       // schedule floor keeps the step bound
  CHECK(commit_count(conf, 7, std::nullopt) == 4);  // never more than the masked positions
  CHECK(commit_count({0.5f}, 0, 0.5f) == 1);     // >= counts
}

TEST_CASE("factor rule: the n-th best commits while its confidence >= 1 - f/(n+1)") {
  // f = 1: bounds are 1 - 1/3 = 0.667 (n = 2), 0.75 (n = 3), 0.8 (n = 4).
  CHECK(commit_count({0.99f, 0.7f, 0.76f, 0.79f}, 0, std::nullopt, 1.f) == 3);  // 4th fails 0.8
  CHECK(commit_count({0.1f, 0.2f}, 0, std::nullopt, 1.f) == 1);       // first always commits
  CHECK(commit_count({0.9f, 0.9f, 0.9f}, 0, std::nullopt, 1.f) == 3); // all pass
  CHECK(commit_count({0.9f, 0.5f, 0.95f}, 0, std::nullopt, 1.f) == 2); // stops at the first failure
  CHECK(commit_count({0.9f, 0.1f, 0.1f}, 2, std::nullopt, 1.f) == 2);  // schedule floor
  CHECK(commit_count({0.9f, 0.6f}, 0, std::nullopt, 2.f) == 2);       // f = 2: bound 0.333 for n = 2
  CHECK(commit_count({0.9f, 0.6f}, 0, std::nullopt, 0.5f) == 1);      // f = 0.5: bound 0.833
}

TEST_CASE("invalid settings are usage errors that say what to change") {
  const ModelConfig c = small_config();
  GenerationSettings s;
  s.gen_length = 12;
  s.block_length = 5;
  s.steps = 12;
  CHECK_THROWS_WITH_AS(validate_settings(s, 3, c), doctest::Contains("not a multiple of --block-length"),
                       Error);
  s.block_length = 4;  // 3 blocks
  s.steps = 10;
  CHECK_THROWS_WITH_AS(validate_settings(s, 3, c), doctest::Contains("use a multiple of 3"), Error);
  s.steps = 12;
  CHECK_NOTHROW(validate_settings(s, 3, c));
  CHECK_THROWS_WITH_AS(validate_settings(s, 60, c), doctest::Contains("max_sequence_length 64"), Error);
  CHECK_THROWS_WITH_AS(validate_settings(s, 0, c), doctest::Contains("prompt is empty"), Error);
  s.top_p = 0.f;
  CHECK_THROWS_WITH_AS(validate_settings(s, 3, c), doctest::Contains("--top-p"), Error);
  try {
    parse_remasking("lowest");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.exit_code() == kExitUsage);
    CHECK(std::string(e.what()).find("low_confidence or random") != std::string::npos);
  }
}

TEST_CASE("sampler commits the scheduled number of most confident positions per block") {
  const ModelConfig c = small_config();
  GenerationSettings s;
  s.gen_length = 4;
  s.block_length = 2;
  s.steps = 2;  // one step per block: the whole block at once
  Sampler sampler({5, 6}, s, c);
  CHECK(sampler.wanted() == std::vector<int32_t>{2, 3});
  sampler.commit({pick(3, 0.5f), pick(4, 0.6f)});
  CHECK(sampler.wanted() == std::vector<int32_t>{4, 5});
  sampler.commit({pick(7, 0.1f), pick(8, 0.2f)});
  CHECK(sampler.done());
  CHECK(sampler.answer() == std::vector<int32_t>{3, 4, 7, 8});
  CHECK(sampler.steps_done() == 2);
}

TEST_CASE("ties in confidence commit the lowest position first") {
  const ModelConfig c = small_config();
  GenerationSettings s;
  s.gen_length = 3;
  s.block_length = 3;
  s.steps = 3;
  Sampler sampler({5}, s, c);
  sampler.commit({pick(3, 0.5f), pick(4, 0.5f), pick(6, 0.5f)});
  CHECK(sampler.answer() == std::vector<int32_t>{3, 9, 9});
  CHECK(sampler.wanted() == std::vector<int32_t>{2, 3});
}

TEST_CASE("early stop ends once an EOS is committed with nothing masked before it") {
  const ModelConfig c = small_config();
  GenerationSettings s;
  s.gen_length = 4;
  s.block_length = 4;
  s.steps = 4;  // one commit per step
  for (bool eos_stop : {true, false}) {
    CAPTURE(eos_stop);
    s.eos_stop = eos_stop;
    Sampler sampler({5}, s, c);
    // Step 1 commits 4 at answer[1]; an EOS elsewhere is not committed yet.
    sampler.commit({pick(2, 0.1f), pick(4, 0.9f), pick(4, 0.1f), pick(4, 0.1f)});
    CHECK(!sampler.done());
    // Step 2 commits EOS at answer[0]: the text (empty) is final while answer[2..3] are masked.
    sampler.commit({pick(2, 0.9f), pick(4, 0.1f), pick(4, 0.1f)});
    CHECK(sampler.done() == eos_stop);
    CHECK(sampler.stopped_early() == eos_stop);
    if (eos_stop) CHECK(sampler.answer() == std::vector<int32_t>{2, 4, 2, 2});
  }
}

TEST_CASE("no early stop while a position before the EOS is still masked") {
  const ModelConfig c = small_config();
  GenerationSettings s;
  s.gen_length = 3;
  s.block_length = 3;
  s.steps = 3;
  Sampler sampler({5}, s, c);
  sampler.commit({pick(4, 0.1f), pick(2, 0.9f), pick(4, 0.1f)});  // EOS at answer[1], answer[0] masked
  CHECK(!sampler.done());
  CHECK(sampler.wanted() == std::vector<int32_t>{1, 3});
}

TEST_CASE("text length stops at the first stop id") {
  CHECK(text_length({4, 5, 2, 6, 2}, {2}) == 2);
  CHECK(text_length({4, 5}, {2}) == 2);
  CHECK(text_length({7, 4}, {2, 7}) == 0);
}

TEST_CASE("--eos-last commits stop tokens only when the schedule needs them") {
  const ModelConfig c = small_config();
  GenerationSettings s;
  s.gen_length = 3;
  s.block_length = 3;
  s.steps = 3;
  s.eos_last = true;
  s.eos_stop = false;
  Sampler sampler({5}, s, c);
  // The EOS pick is the most confident, but a normal token is committed first.
  sampler.commit({pick(2, 0.99f), pick(4, 0.3f), pick(6, 0.2f)});
  CHECK(sampler.answer() == std::vector<int32_t>{9, 4, 9});
  sampler.commit({pick(2, 0.99f), pick(2, 0.98f)});  // both EOS: order among them kept
  CHECK(sampler.answer() == std::vector<int32_t>{2, 4, 9});
}

TEST_CASE("Dream's timesteps and transfer counts") {
  for (int steps : {1, 2, 7, 8, 64, 512}) {
    CAPTURE(steps);
    const std::vector<float> t = unmask::dream_timesteps(steps, 1e-3f);
    REQUIRE(t.size() == static_cast<size_t>(steps) + 1);
    CHECK(t.front() == 1.f);
    CHECK(t.back() == 1e-3f);  // the second half is filled from the end, so eps is exact
    for (int i = 0; i < steps; i++) CHECK(t[i + 1] < t[i]);
    // Committing int(n * share) of what is left, everything at the last step, empties the answer.
    int masked = 100;
    for (int i = 0; i < steps; i++) {
      const int k = unmask::dream_transfer_count(t, i, masked);
      CHECK(k >= 0);
      CHECK(k <= masked);
      masked -= k;
    }
    CHECK(masked == 0);
  }
  // S = 4: t = 1, 0.75025, 0.5005, 0.25075, 0.001; shares 0.24975, 0.3329, 0.4990, 1.
  const std::vector<float> t4 = unmask::dream_timesteps(4, 1e-3f);
  CHECK(unmask::dream_transfer_count(t4, 0, 16) == 3);  // int(16 * 0.24975)
  CHECK(unmask::dream_transfer_count(t4, 1, 13) == 4);  // int(13 * 0.3329)
  CHECK(unmask::dream_transfer_count(t4, 2, 9) == 4);   // int(9 * 0.4990)
  CHECK(unmask::dream_transfer_count(t4, 3, 5) == 5);
}
