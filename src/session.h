// Everything a run needs, loaded once: config, mapped weights, tokenizer, backend and model.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "backend.h"
#include "config.h"
#include "model.h"
#include "safetensors.h"
#include "tokenizer.h"
#include "weights.h"

namespace unmask {

// The model directory to use: `option` if given, else $UNMASK_MODEL, else the bundled model
// next to the executable (build tree), under the install prefix, or in the source tree.
std::string resolve_model_dir(const std::string& option);

struct Session {
  std::string model_dir;
  ModelConfig config;
  std::optional<TensorStore> store;  // engaged once loaded
  ModelWeights weights;  // host views into the mmap
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
  double load_seconds = 0;
};

// Loads and validates the model directory, then uploads it to the chosen backend.
std::unique_ptr<Session> open_session(const std::string& model_dir, const std::string& backend,
                                      int threads);

}  // namespace unmask
