// --visual: the answer canvas redrawn in place on stderr while its masks fill in.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace unmask {

// What a canvas position looks like: "▁" becomes a space, a newline byte "↵", other control
// bytes "·", so one position never moves the cursor on its own.
std::string display_piece(const std::string& piece);

struct CanvasStyle {
  int32_t mask_id = -1;
  std::vector<int32_t> stop_ids;  // shown as "∎": the text ends at the first of them
  bool color = true;              // false: no escape codes at all (NO_COLOR)
};

// One frame: masks as "░" (dim), positions that changed since `previous` bold green, the rest as
// their pieces. `previous` empty: nothing is new. Pure, for tests.
std::string render_canvas(const std::vector<int32_t>& answer, const std::vector<int32_t>& previous,
                          const CanvasStyle& style,
                          const std::function<std::string(int32_t)>& piece);

// Columns of a UTF-8 string as a terminal lays it out: code points outside escape sequences.
int display_width(const std::string& text);

// Draws successive frames over each other: colour mode moves the cursor back over the last frame
// (its rows from the terminal width); NO_COLOR mode prints one frame per line.
class CanvasDisplay {
 public:
  CanvasDisplay(FILE* out, const Tokenizer& tokenizer, CanvasStyle style, int columns);
  void draw(const std::vector<int32_t>& answer);
  void finish();  // ends the last frame's line

 private:
  FILE* out_;
  const Tokenizer& tokenizer_;
  CanvasStyle style_;
  int columns_;
  int rows_drawn_ = 0;
  std::vector<int32_t> previous_;
};

// Whether --visual can draw on `fd`: a terminal. Colour unless NO_COLOR is set (to anything).
bool visual_available(int fd);
bool color_wanted();
int terminal_columns(int fd);  // 80 when unknown

}  // namespace unmask
