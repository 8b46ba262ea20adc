// Batch progress on stderr: a redrawn bar on a terminal, periodic plain lines otherwise.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

namespace unmask {

// "[#####-----] 12/30 done  345.6 tok/s  ETA 0:12" (the bar only when `bar_width` > 0).
std::string progress_text(int done, int total, double tokens_per_second, double eta_seconds,
                          int bar_width);
// "1:02:03" / "2:03"; "?" when unknown (negative).
std::string format_duration(double seconds);

class Progress {
 public:
  enum class Mode { None, Bar, Lines };
  Progress(FILE* out, Mode mode, int total);

  // Call after each finished record and now and then in between; redraws when due.
  void update(int done, long long generated_tokens);
  // Clears the bar so the summary starts on a clean line.
  void finish();

 private:
  using Clock = std::chrono::steady_clock;
  FILE* out_;
  Mode mode_;
  int total_;
  Clock::time_point start_, last_draw_;
  bool drawn_ = false;
};

}  // namespace unmask
