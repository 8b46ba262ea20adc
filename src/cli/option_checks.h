// Checks of option values as typed: decimal numbers only (no octal "010", no hex "0x10"), ranges
// that say why, and no empty strings where a value is required.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

namespace unmask {

// A decimal integer in [lo, hi], else an error that gives the limit and `why`. Leading zeros are
// decimal ("010" is 10, never octal 8); the value is handed on in canonical form. Use with
// ->transform(). Works per element of a comma-separated list.
CLI::Validator bounded(int64_t lo, int64_t hi, const std::string& why = "");
// A decimal unsigned 64-bit integer (seeds): no sign, no wrap-around, no saturation.
CLI::Validator decimal_u64();
// A decimal floating-point number, or inf/nan spelled out (which the settings validator then
// refuses with its range); hexadecimal floats are refused. Use with ->transform().
CLI::Validator decimal_number();
// Refuses an empty string ("-m ''" must not mean "no model given").
CLI::Validator non_empty();

}  // namespace unmask
