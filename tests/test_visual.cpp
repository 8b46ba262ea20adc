// --visual: the canvas renderer as a pure function, display widths, and the CLI fallback.
#include <doctest/doctest.h>

#include "cli/visual.h"
#include "fixtures.h"

using namespace unmask;
using unmask::test::fixture;
using unmask::test::run_unmask;

namespace {
std::string piece_of(int32_t id) {
  switch (id) {
    case 10: return "\xe2\x96\x81the";  // "▁the"
    case 11: return "\xe2\x96\x81light";
    case 12: return "<0x0A>";
    case 13: return "!";
    default: return "<" + std::to_string(id) + ">";
  }
}
}  // namespace

TEST_CASE("display pieces: word boundaries as spaces, control bytes never move the cursor") {
  CHECK(display_piece("\xe2\x96\x81the") == " the");
  CHECK(display_piece("<0x0A>") == "↵");
  CHECK(display_piece("<0x09>") == "·");
  CHECK(display_piece("<0x41>") == "A");
  CHECK(display_piece("<0xE2>") == "·");
  CHECK(display_piece("a\nb\x01") == "a↵b·");
  CHECK(display_piece("<|endoftext|>") == "<|endoftext|>");
}

TEST_CASE("render_canvas: masks dim, new tokens highlighted for one frame, NO_COLOR plain") {
  CanvasStyle style;
  style.mask_id = 1;
  style.stop_ids = {2};
  const std::vector<int32_t> before = {10, 1, 1, 1};
  const std::vector<int32_t> after = {10, 11, 1, 12};

  style.color = true;
  CHECK(render_canvas(before, {}, style, piece_of) ==
        " the\x1b[2m░\x1b[0m\x1b[2m░\x1b[0m\x1b[2m░\x1b[0m");
  CHECK(render_canvas(after, before, style, piece_of) ==
        " the\x1b[1;32m light\x1b[0m\x1b[2m░\x1b[0m\x1b[1;32m↵\x1b[0m");
  // One frame later nothing is new any more.
  CHECK(render_canvas(after, after, style, piece_of) == " the light\x1b[2m░\x1b[0m↵");
  // Stop tokens: a dim end mark, highlighted in the frame that commits them.
  CHECK(render_canvas({13, 2, 2}, {13, 2, 1}, style, piece_of) ==
        "!\x1b[2m∎\x1b[0m\x1b[1;32m∎\x1b[0m");

  style.color = false;
  CHECK(render_canvas(after, before, style, piece_of) == " the light░↵");
  CHECK(render_canvas({13, 2, 1}, {}, style, piece_of) == "!∎░");
}

TEST_CASE("display_width counts code points and skips escape sequences") {
  CHECK(display_width("abc") == 3);
  CHECK(display_width("░░") == 2);
  CHECK(display_width("\x1b[1;32m light\x1b[0m\x1b[2m░\x1b[0m") == 7);
  CHECK(display_width("") == 0);
}

TEST_CASE("--visual falls back to plain output when stderr is not a terminal") {
  const std::string args = "-m " + fixture("tiny-f32-gqa") +
                           " --threads 1 --gen-length 8 --block-length 8 -q 'In the beginning'";
  const auto plain = run_unmask(args);
  const auto visual = run_unmask("--visual " + args);
  REQUIRE(plain.exit_code == 0);
  CHECK(visual.exit_code == 0);
  CHECK(visual.out == plain.out);
  CHECK(visual.err.empty());
}
