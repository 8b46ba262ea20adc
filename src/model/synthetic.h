// Synthetic models: a real model's shape with deterministic random weights built in backend memory.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/config.h"
#include "io/weights.h"
#include "model/backend.h"
#include "model/model.h"

namespace unmask {

// The shape of a synthetic model and the dtype its weights are stored in.
struct SyntheticSpec {
  std::string name;  // "llada-8b", "dream-7b", "default", or the config.json path
  ModelConfig config;
  DType dtype = DType::F32;
};

// `spec`: "llada-8b" (LLaDA-8B's shape, bf16), "dream-7b" (Dream-v0-7B's, bf16), "default" (the bundled model's config.json when
// found, else the tiny test model's shape) or a path to a config.json (dtype from "torch_dtype").
SyntheticSpec synthetic_spec(const std::string& spec);

// Bytes the weights of `spec` take in its dtype (double: a wrong config may overflow any integer).
double synthetic_weight_bytes(const SyntheticSpec& spec);

// Random weights of `spec`'s shape in `backend` memory, and the Model over them. Matrices are
// uniform in ±1/sqrt(in) so activations stay finite through any depth; norm weights are 1.
// On the CPU a shape that needs more memory than the machine has is a usage error before any
// allocation. Must be destroyed before the backend.
class SyntheticModel {
 public:
  SyntheticModel(Backend& backend, const SyntheticSpec& spec);
  ~SyntheticModel();
  SyntheticModel(const SyntheticModel&) = delete;
  SyntheticModel& operator=(const SyntheticModel&) = delete;

  Model& model() { return *model_; }
  const SyntheticSpec& spec() const { return spec_; }

 private:
  Tensor ones(int64_t n);  // [1, n] of spec_.dtype, all 1

  Backend& backend_;
  SyntheticSpec spec_;
  ModelWeights weights_;       // backend-resident
  std::vector<void*> owned_;   // norm weights allocated here (random_weight's go with the backend)
  std::unique_ptr<Model> model_;
};

// Prompt ids without a tokenizer: `n` ids in [0, vocab_size), never the mask or a stop id.
std::vector<int32_t> random_prompt(const ModelConfig& config, int n, uint64_t seed);

}  // namespace unmask
