// Progress rendering: the text of one progress line, and when and how to redraw it.
#include "cli/progress.h"

#include <cmath>

namespace unmask {

std::string format_duration(double seconds) {
  if (seconds < 0 || !std::isfinite(seconds)) return "?";
  const long long s = static_cast<long long>(std::llround(seconds));
  char buf[48];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
  return buf;
}

std::string progress_text(int done, int total, double tokens_per_second, double eta_seconds,
                          int bar_width) {
  std::string text;
  if (bar_width > 0) {
    const int filled = total > 0 ? static_cast<int>(static_cast<long long>(bar_width) * done / total) : 0;
    text = "[" + std::string(filled, '#') + std::string(bar_width - filled, '-') + "] ";
  }
  char buf[128];
  std::snprintf(buf, sizeof buf, "%d/%d done  %.1f tok/s  ETA %s", done, total, tokens_per_second,
                format_duration(eta_seconds).c_str());
  return text + buf;
}

Progress::Progress(FILE* out, Mode mode, int total)
    : out_(out), mode_(mode), total_(total), start_(Clock::now()), last_draw_(start_) {}

void Progress::update(int done, long long generated_tokens) {
  if (mode_ == Mode::None) return;
  const auto now = Clock::now();
  const double since_draw = std::chrono::duration<double>(now - last_draw_).count();
  // note: a terminal can take ~10 redraws a second; a log file wants a line every few seconds.
  const double interval = mode_ == Mode::Bar ? 0.1 : 5.0;
  if (drawn_ && since_draw < interval && done < total_) return;
  if (!drawn_ && mode_ == Mode::Lines && since_draw < interval) return;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? generated_tokens / elapsed : 0;
  const double eta = done > 0 ? elapsed / done * (total_ - done) : -1;
  if (mode_ == Mode::Bar) {
    std::fprintf(out_, "\r%s\x1b[K", progress_text(done, total_, rate, eta, 24).c_str());
  } else {
    std::fprintf(out_, "progress: %s\n", progress_text(done, total_, rate, eta, 0).c_str());
  }
  std::fflush(out_);
  last_draw_ = now;
  drawn_ = true;
}

void Progress::finish() {
  if (mode_ == Mode::Bar && drawn_) {
    std::fprintf(out_, "\r\x1b[K");
    std::fflush(out_);
  }
}

}  // namespace unmask
