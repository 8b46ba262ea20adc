// unmask batch: JSONL in, JSONL out, ragged continuous batching, resumable and shardable.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <utility>

#include "cli/options.h"

namespace unmask {

struct BatchOptions {
  CommonOptions common;  // no --format: the output is always JSONL
  GenerationOptions gen;
  PromptOptions prompt;       // --chat wraps "prompt" lines too; --system joins every chat prompt
  std::string input, output;  // "-": stdin / stdout
  int batch_size = 0;         // 0: chosen from the canvas size and the backend
  bool resume = false;
  bool echo_prompt = false;   // copy each line's prompt (or messages) into its record
  std::string shard;          // "K/N", empty: every line
};

CLI::App* add_batch_command(CLI::App& app, BatchOptions& o);
int run_batch(const BatchOptions& o);

// "K/N" -> {K, N}; fail_usage unless 0 <= K < N.
std::pair<int, int> parse_shard(const std::string& text);

// The default --batch-size: canvases that fit a row budget, at most 8 on the CPU.
int default_batch_size(const std::string& backend, int max_canvas);

}  // namespace unmask
