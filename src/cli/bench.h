// unmask bench: repeated timed runs over a matrix of settings, on a model or a synthetic one.
#pragma once

#include <CLI/CLI.hpp>

#include <optional>
#include <string>
#include <vector>

#include "cli/options.h"

namespace unmask {

struct BenchOptions {
  CommonOptions common;                 // --format text, json or csv
  std::string synthetic;                // empty: the model of -m / $UNMASK_MODEL / bundled
  std::optional<int> layers;            // --layers N: the first N layers of the --synthetic shape
  std::vector<int> gen_lengths;         // empty: the model's default
  std::vector<int> batch_sizes = {1};
  std::vector<int> steps;               // empty: gen-length
  std::vector<int> block_lengths;       // empty: the model's default rule (options.h)
  std::optional<int> prompt_length;     // random-id prompts (--synthetic only); default 16
  std::string prompts_file;             // --prompts: one text prompt a line (models only)
  bool no_header = false;               // --no-header: CSV rows only
  int repeat = 3, warmup = 1;
  float cfg_scale = 0.f;
  std::optional<float> threshold;
  std::optional<float> factor;
  std::vector<std::string> caches;  // --cache modes to compare (default: the loop's own, see options.h)
  std::string alg;                  // empty: the family's default loop
  bool baseline = false;
};

CLI::App* add_bench_command(CLI::App& app, BenchOptions& o);
int run_bench(const BenchOptions& o);

// Held-out verse openings of the bundled model's corpus: bench's prompts for a model unless
// --prompts gives others.
const std::vector<std::string>& builtin_bench_prompts();

// Linear-interpolated percentile (q in [0, 1]) of `v`; 0 when empty.
double percentile(std::vector<double> v, double q);

}  // namespace unmask
