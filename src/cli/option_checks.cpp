// Option value checks: one decimal syntax for every number on the command line.
#include "cli/option_checks.h"

#include <cerrno>
#include <cstdlib>
#include <limits>
#include <regex>

namespace unmask {
namespace {

bool all_digits(const std::string& s, size_t from) {
  if (from >= s.size()) return false;
  for (size_t i = from; i < s.size(); i++)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

// "-007" -> "-7"; "000" -> "0".
std::string without_leading_zeros(const std::string& s) {
  const size_t sign = (s[0] == '+' || s[0] == '-') ? 1 : 0;
  size_t first = s.find_first_not_of('0', sign);
  if (first == std::string::npos) return "0";
  return (s[0] == '-' ? "-" : "") + s.substr(first);
}

}  // namespace

CLI::Validator bounded(int64_t lo, int64_t hi, const std::string& why) {
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  return CLI::Validator(
      [lo, hi, why, range](std::string& text) -> std::string {
        const size_t sign = (!text.empty() && (text[0] == '+' || text[0] == '-')) ? 1 : 0;
        if (!all_digits(text, sign)) return "'" + text + "' is not a decimal integer";
        const std::string canonical = without_leading_zeros(text);
        errno = 0;
        const long long v = std::strtoll(canonical.c_str(), nullptr, 10);
        if (errno == ERANGE || v < lo || v > hi)
          return "must be in " + range + " (got " + text + ")" + (why.empty() ? "" : ": " + why);
        text = canonical;
        return "";
      },
      "INT in " + range);
}

CLI::Validator decimal_u64() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        if (!all_digits(text, 0)) return "'" + text + "' is not a non-negative decimal integer";
        const std::string canonical = without_leading_zeros(text);
        errno = 0;
        (void)std::strtoull(canonical.c_str(), nullptr, 10);
        if (errno == ERANGE) return "must be at most " + std::to_string(std::numeric_limits<uint64_t>::max()) + " (got " + text + ")";
        text = canonical;
        return "";
      },
      "UINT64");
}

CLI::Validator decimal_number() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        static const std::regex number(R"(^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$)");
        static const std::regex word(R"(^[+-]?(inf|infinity|nan)$)", std::regex::icase);
        if (std::regex_match(text, number) || std::regex_match(text, word)) return "";
        return "'" + text + "' is not a decimal number";
      },
      "NUMBER");
}

CLI::Validator non_empty() {
  return CLI::Validator(
      [](std::string& text) -> std::string { return text.empty() ? "must not be empty" : ""; }, "");
}

}  // namespace unmask
