// The Engine: runs one step of many samplers as one ragged forward, then picks on the device.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "decode/sampler.h"
#include "model/model.h"

namespace unmask {

struct EngineStats {
  int64_t forward_calls = 0;     // batched model evaluations
  int64_t sequence_forwards = 0; // per-sequence evaluations (a CFG step counts two)
  int64_t tokens_evaluated = 0;  // canvas rows pushed through the model
  double forward_seconds = 0;    // time inside forward + pick
  double flops = 0;              // FLOPs of all forwards (Model::forward_flops)
  std::vector<double> forward_ms;  // per batched forward, for median / p90
  int64_t cache_refreshes = 0;     // sequence forwards over the whole canvas under a KV cache
  int64_t cached_forwards = 0;     // sequence forwards over part of the canvas (cache hits)
  double full_seconds = 0;         // batched forwards that recomputed some whole canvas
  double cached_seconds = 0;       // batched forwards made only of cached sequences
};

class Engine {
 public:
  explicit Engine(Model& model);

  // Sizes the model's buffers for `n_requests` canvases of at most `canvas_length` tokens, and the
  // KV cache slots when `cache` (a request's slot holds its canvas, twice with CFG).
  void reserve(int32_t n_requests, int32_t canvas_length, bool cfg, bool cache = false);

  // One step of every sampler in `active` that is not done: one forward of all their canvases
  // (plus unconditional twins), one pick, one commit each.
  void step(const std::vector<Sampler*>& active);

  // Runs the samplers to completion together.
  void run(const std::vector<Sampler*>& samplers);

  // Canvas rows each KV cache slot holds (0 before the first cached request): a cached request's
  // canvas must fit in one.
  int32_t cache_slot_rows() const { return slot_rows_; }
  // Makes every slot hold `rows` canvas rows. Only while no running request holds a slot: their
  // cached keys and values would be torn apart (the server calls it when its batch has none).
  void resize_cache_slots(int32_t rows);

  const EngineStats& stats() const { return stats_; }
  // Drops the per-forward times (stats().forward_ms), which a long-running server would
  // otherwise accumulate without bound; the totals stay.
  void forget_forward_times() { stats_.forward_ms.clear(); }
  Model& model() { return model_; }

 private:
  Model& model_;
  EngineStats stats_;
  ForwardBatch batch_;
  std::vector<PickParams> params_;
  std::vector<PickResult> results_;
  std::vector<int32_t> banned_;
  // KV cache slots: each cached sequence (and its CFG twin) owns rows [slot * slot_rows_, ...).
  int32_t slot_rows_ = 0;
  std::unordered_map<const Sampler*, int32_t> slots_;  // first of its slots
  std::vector<int32_t> free_slots_;
  int32_t slot_for(const Sampler* s, const std::vector<Sampler*>& active);
  // One forward for `group` (samplers of `live`, the whole batch, which keeps its cache slots).
  void step_group(const std::vector<Sampler*>& group, const std::vector<Sampler*>& live);
};

}  // namespace unmask
