// Canvas rendering for --visual: pure frame rendering, then in-place redraw on a terminal.
#include "cli/visual.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

namespace unmask {

namespace {
const char* kDim = "\x1b[2m";
const char* kNew = "\x1b[1;32m";
const char* kReset = "\x1b[0m";
}  // namespace

std::string display_piece(const std::string& piece) {
  if (piece == "<0x0A>") return "↵";
  if (piece.size() == 6 && piece.rfind("<0x", 0) == 0 && piece.back() == '>') {
    const int byte = static_cast<int>(std::strtol(piece.substr(3, 2).c_str(), nullptr, 16));
    if (byte < 0x20 || byte == 0x7f) return "·";
    if (byte < 0x80) return std::string(1, static_cast<char>(byte));
    return "·";  // half of a multi-byte character: not printable alone
  }
  std::string out;
  for (size_t i = 0; i < piece.size(); i++) {
    const unsigned char ch = static_cast<unsigned char>(piece[i]);
    if (piece.compare(i, 3, "\xe2\x96\x81") == 0) {  // U+2581, sentencepiece's word boundary
      out += ' ';
      i += 2;
    } else if (ch == '\n') {
      out += "↵";
    } else if (ch < 0x20 || ch == 0x7f) {
      out += "·";
    } else {
      out += static_cast<char>(ch);
    }
  }
  return out;
}

std::string render_canvas(const std::vector<int32_t>& answer, const std::vector<int32_t>& previous,
                          const CanvasStyle& style,
                          const std::function<std::string(int32_t)>& piece) {
  std::string out;
  for (size_t i = 0; i < answer.size(); i++) {
    const int32_t id = answer[i];
    const bool is_new = i < previous.size() && previous[i] != id;
    const bool stop = std::find(style.stop_ids.begin(), style.stop_ids.end(), id) != style.stop_ids.end();
    std::string text;
    bool dim = false;
    if (id == style.mask_id) {
      text = "░";
      dim = true;
    } else if (stop) {
      text = "∎";
      dim = !is_new;
    } else {
      text = display_piece(piece(id));
    }
    if (style.color && is_new) {
      out += kNew + text + kReset;
    } else if (style.color && dim) {
      out += kDim + text + kReset;
    } else {
      out += text;
    }
  }
  return out;
}

int display_width(const std::string& text) {
  int width = 0;
  for (size_t i = 0; i < text.size(); i++) {
    const unsigned char ch = static_cast<unsigned char>(text[i]);
    if (ch == 0x1b) {  // CSI sequence: ESC [ params final-byte
      i++;
      while (i + 1 < text.size() && !(text[i + 1] >= 0x40 && text[i + 1] <= 0x7e)) i++;
      i++;
      continue;
    }
    if ((ch & 0xc0) != 0x80) width++;  // count lead bytes only
  }
  return width;
}

CanvasDisplay::CanvasDisplay(FILE* out, const Tokenizer& tokenizer, CanvasStyle style, int columns)
    : out_(out), tokenizer_(tokenizer), style_(std::move(style)), columns_(std::max(columns, 1)) {}

void CanvasDisplay::draw(const std::vector<int32_t>& answer) {
  const std::string frame = render_canvas(answer, previous_, style_,
                                          [this](int32_t id) { return tokenizer_.display_text(id); });
  if (style_.color) {
    // Back to the first row of the previous frame, then clear everything below it.
    std::string prefix = "\r";
    for (int r = 1; r < rows_drawn_; r++) prefix += "\x1b[A";
    if (rows_drawn_ > 0) prefix += "\x1b[J";
    std::fputs((prefix + frame).c_str(), out_);
    const int width = display_width(frame);
    rows_drawn_ = std::max(1, (width + columns_ - 1) / columns_);
  } else {
    std::fputs((frame + "\n").c_str(), out_);
  }
  std::fflush(out_);
  previous_ = answer;
}

void CanvasDisplay::finish() {
  if (style_.color && rows_drawn_ > 0) std::fputs("\n", out_);
  std::fflush(out_);
}

bool visual_available(int fd) { return isatty(fd) != 0; }

bool color_wanted() {
  const char* no_color = std::getenv("NO_COLOR");
  return no_color == nullptr || *no_color == '\0';
}

int terminal_columns(int fd) {
  struct winsize ws = {};
  if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

}  // namespace unmask
