// Engine: assembles ragged batches from active samplers and feeds picks back to them.
#include "engine.h"

#include <chrono>

#include "common.h"

namespace unmask {

Engine::Engine(Model& model) : model_(model) {
  banned_.push_back(model.config().mask_token_id);  // never a candidate (DESIGN.md §4)
}

void Engine::reserve(int32_t n_requests, int32_t canvas_length, bool cfg) {
  const int32_t seqs = n_requests * (cfg ? 2 : 1);
  model_.reserve(seqs * canvas_length, seqs * canvas_length, seqs);
}

void Engine::step(const std::vector<Sampler*>& active) {
  batch_.clear();
  params_.clear();
  struct Span { Sampler* sampler; size_t first_pick; };
  std::vector<Span> spans;
  // Conditional sequences first; their rows fill out_rows [0, n_cond).
  std::vector<int32_t> cond_start;
  for (Sampler* s : active) {
    if (s->done()) continue;
    const int32_t start = batch_.add_sequence(s->canvas());
    cond_start.push_back(start);
    spans.push_back({s, params_.size()});
    for (int32_t pos : s->wanted()) {
      batch_.out_rows.push_back(start + pos);
      params_.push_back(s->pick_params(pos));
    }
    if (s->uses_cfg()) stats_.sequence_forwards++;
    stats_.sequence_forwards++;
  }
  if (spans.empty()) return;
  const size_t n_cond = params_.size();
  // Unconditional twins after them: their logits rows follow at [n_cond, ...).
  for (size_t i = 0; i < spans.size(); i++) {
    Sampler* s = spans[i].sampler;
    if (!s->uses_cfg()) continue;
    const int32_t start = batch_.add_sequence(s->unconditional_canvas());
    size_t k = spans[i].first_pick;
    for (int32_t pos : s->wanted()) {
      params_[k++].uncond_row = static_cast<int32_t>(batch_.out_rows.size() - n_cond);
      batch_.out_rows.push_back(start + pos);
    }
  }

  const auto t0 = std::chrono::steady_clock::now();
  Tensor logits = model_.forward(batch_);
  Tensor cond = logits.row_slice(0, static_cast<int64_t>(n_cond));
  Tensor uncond = logits.row_slice(static_cast<int64_t>(n_cond), logits.rows - static_cast<int64_t>(n_cond));
  results_.resize(n_cond);
  model_.backend().pick(cond, uncond.rows > 0 ? &uncond : nullptr, params_.data(), banned_,
                        results_.data());
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  stats_.forward_ms.push_back(ms);
  stats_.forward_seconds += ms / 1000.0;
  stats_.forward_calls++;
  stats_.tokens_evaluated += batch_.n_tokens();
  stats_.flops += model_.forward_flops(batch_);

  std::vector<PickResult> picks;
  for (const Span& span : spans) {
    const size_t n = span.sampler->wanted().size();
    picks.assign(results_.begin() + span.first_pick, results_.begin() + span.first_pick + n);
    span.sampler->commit(picks);
  }
}

void Engine::run(const std::vector<Sampler*>& samplers) {
  for (;;) {
    bool any = false;
    for (Sampler* s : samplers) any = any || !s->done();
    if (!any) return;
    step(samplers);
  }
}

}  // namespace unmask
