// Error type, exit codes and the CHECK macros every file uses to fail with context.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace unmask {

// Documented exit codes (README, man page): one place, mapped once in main.
enum ExitCode : int {
  kExitOk = 0,
  kExitRuntime = 1,     // runtime failure: out of memory, device errors, internal bugs
  kExitUsage = 2,       // bad command-line option or option combination
  kExitBadInput = 3,    // bad model directory or input file
  kExitBatchFailed = 4, // batch finished, but some records failed
  kExitInterrupted = 130,
};

// The one error type. `what()` is a complete one-line message for the user.
class Error : public std::runtime_error {
 public:
  Error(int exit_code, const std::string& message)
      : std::runtime_error(message), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// Bad model file / input file: the message must name the file, field or line.
[[noreturn]] inline void fail_input(const std::string& message) {
  throw Error(kExitBadInput, message);
}
// Bad option or option combination: the message says what to change.
[[noreturn]] inline void fail_usage(const std::string& message) {
  throw Error(kExitUsage, message);
}
[[noreturn]] inline void fail_runtime(const std::string& message) {
  throw Error(kExitRuntime, message);
}

namespace detail {
[[noreturn]] inline void check_failed(const char* file, int line, const char* cond,
                                      const std::string& message) {
  std::ostringstream os;
  os << "internal error at " << file << ":" << line << ": " << message << " (" << cond << ")";
  throw Error(kExitRuntime, os.str());
}
}  // namespace detail

}  // namespace unmask

// Invariant checks that indicate a bug or a broken environment, not bad user input.
// Usage: UNMASK_CHECK(n > 0, "n must be positive, got " << n);
#define UNMASK_CHECK(cond, msg)                                                      \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::ostringstream unmask_check_os_;                                           \
      unmask_check_os_ << msg;                                                       \
      ::unmask::detail::check_failed(__FILE__, __LINE__, #cond, unmask_check_os_.str()); \
    }                                                                                \
  } while (0)
