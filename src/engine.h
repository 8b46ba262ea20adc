// The Engine: runs one step of many samplers as one ragged forward, then picks on the device.
#pragma once

#include <cstdint>
#include <vector>

#include "model.h"
#include "sampler.h"

namespace unmask {

struct EngineStats {
  int64_t forward_calls = 0;     // batched model evaluations
  int64_t sequence_forwards = 0; // per-sequence evaluations (a CFG step counts two)
  int64_t tokens_evaluated = 0;  // canvas rows pushed through the model
  double forward_seconds = 0;    // time inside forward + pick
  double flops = 0;              // FLOPs of all forwards (Model::forward_flops)
  std::vector<double> forward_ms;  // per batched forward, for median / p90
};

class Engine {
 public:
  explicit Engine(Model& model);

  // Sizes the model's buffers for `n_requests` canvases of `canvas_length` tokens.
  void reserve(int32_t n_requests, int32_t canvas_length, bool cfg);

  // One step of every sampler in `active` that is not done: one forward of all their canvases
  // (plus unconditional twins), one pick, one commit each.
  void step(const std::vector<Sampler*>& active);

  // Runs the samplers to completion together.
  void run(const std::vector<Sampler*>& samplers);

  const EngineStats& stats() const { return stats_; }
  Model& model() { return model_; }

 private:
  Model& model_;
  EngineStats stats_;
  ForwardBatch batch_;
  std::vector<PickParams> params_;
  std::vector<PickResult> results_;
  std::vector<int32_t> banned_;
};

}  // namespace unmask
