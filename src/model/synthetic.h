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
  // "llada-8b", "dream-7b", "llada2-mini", "llada-moe-7b", "default", or the config.json path
  std::string name;
  ModelConfig config;
  DType dtype = DType::F32;
  int64_t shape_layers = 0;  // the shape's own layer count; config.n_layers is less after keep_layers
};

// `spec`: "llada-8b" (LLaDA-8B's shape, bf16), "dream-7b" (Dream-v0-7B's, bf16), "llada2-mini"
// (LLaDA2.0-mini's, bf16, MoE), "llada-moe-7b" (LLaDA-MoE-7B-A1B's, bf16, MoE), "default" (the
// bundled model's config.json when found, else the tiny test model's shape) or a path to a
// config.json (dtype from "torch_dtype").
SyntheticSpec synthetic_spec(const std::string& spec);

// Keeps the first `layers` layers of `spec` (bench --layers): a usage error naming --layers unless
// 1 <= layers <= the shape's layer count (shape_layers keeps the count of the whole shape).
void keep_layers(SyntheticSpec& spec, int64_t layers);

// Bytes the weights of `spec` take in its dtype, the experts and the f32 expert biases of MoE
// layers included (double: a wrong config may overflow any integer).
double synthetic_weight_bytes(const SyntheticSpec& spec);

// Random weights of `spec`'s shape in `backend` memory, and the Model over them. Matrices are
// uniform in ±1/sqrt(in) so activations stay finite through any depth; norm weights (q/k norms
// too) are 1. MoE layers get a router, per-expert SwiGLU weights, the shared expert when the shape
// has one, and an expert bias of small random values stored f32 as real checkpoints store it.
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
