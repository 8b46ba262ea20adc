// Engine: assembles ragged batches from active samplers and feeds picks back to them.
#include "decode/engine.h"

#include <algorithm>
#include <chrono>

#include "common.h"

namespace unmask {

Engine::Engine(Model& model) : model_(model) {
  // The mask is never a candidate (DESIGN.md §4); the stop ids follow, banned per request
  // under --no-eos through PickParams::n_banned.
  banned_.push_back(model.config().mask_token_id);
  for (int32_t id : model.config().stop_token_ids) banned_.push_back(id);
}

void Engine::reserve(int32_t n_requests, int32_t canvas_length, bool cfg, bool cache) {
  const int32_t seqs = n_requests * (cfg ? 2 : 1);
  model_.reserve(seqs * canvas_length, seqs * canvas_length, seqs);
  if (cache) {
    slot_rows_ = std::max(slot_rows_, canvas_length);
    // A slot pair per request: conditional and unconditional canvas.
    model_.reserve_cache(2 * n_requests * slot_rows_);
  }
}

void Engine::resize_cache_slots(int32_t rows) {
  slots_.clear();
  free_slots_.clear();
  slot_rows_ = rows;
}

int32_t Engine::slot_for(const Sampler* s, const std::vector<Sampler*>& active) {
  if (auto it = slots_.find(s); it != slots_.end()) return it->second;
  // Reclaim the slots of requests that finished or left the batch.
  for (auto it = slots_.begin(); it != slots_.end();) {
    bool live = false;
    for (const Sampler* a : active) live = live || (a == it->first && !a->done());
    if (live) {
      ++it;
    } else {
      free_slots_.push_back(it->second);
      it = slots_.erase(it);
    }
  }
  int32_t slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    slot = 2 * static_cast<int32_t>(slots_.size());
  }
  const int32_t needed = (slot + 2) * slot_rows_;
  if (needed > model_.cache_rows()) model_.reserve_cache(needed);  // grows only past reserve()
  slots_[s] = slot;
  return slot;
}

void Engine::step(const std::vector<Sampler*>& active) {
  // Block-causal attention takes one block size per forward: requests with different block
  // lengths step in separate forwards.
  if (model_.config().block_causal) {
    std::vector<int> lengths;
    for (Sampler* s : active)
      if (!s->done() && std::find(lengths.begin(), lengths.end(), s->settings().block_length) == lengths.end())
        lengths.push_back(s->settings().block_length);
    if (lengths.size() > 1) {
      for (int length : lengths) {
        std::vector<Sampler*> group;
        for (Sampler* s : active)
          if (!s->done() && s->settings().block_length == length) group.push_back(s);
        step_group(group, active);
      }
      return;
    }
  }
  step_group(active, active);
}

void Engine::step_group(const std::vector<Sampler*>& group, const std::vector<Sampler*>& live) {
  const std::vector<Sampler*>& active = group;
  batch_.clear();
  params_.clear();
  struct Span { Sampler* sampler; size_t first_pick; };
  // Shifted-logit models (Dream, llama) predict position i from the hidden state at i - 1, and
  // position 0 (a mask written first in the prompt) from its own, as the references do.
  const int32_t shift = model_.config().shifted_logits ? 1 : 0;
  std::vector<Span> spans;
  // Conditional sequences first; their rows fill out_rows [0, n_cond).
  bool any_cache = false, any_refresh = false;
  for (Sampler* s : active) {
    if (s->done()) continue;
    any_cache = any_cache || s->settings().cache != CacheMode::None;
    any_refresh = any_refresh || s->refresh_step();
  }
  if (any_cache && slot_rows_ == 0) {
    int32_t longest = 0;
    for (Sampler* s : live) longest = std::max(longest, static_cast<int32_t>(s->canvas().size()));
    reserve(static_cast<int32_t>(live.size()), longest, false, true);
  }
  // Row of canvas position `pos` of a sequence whose first added token is `start`.
  // Only the window attention reads: the whole canvas, or LLaDA2's blocks up to the current one.
  auto add = [&](Sampler* s, const std::vector<int32_t>& canvas, int32_t slot_row) {
    if (!any_cache) return batch_.add_sequence(canvas, s->attention_end());
    UNMASK_CHECK(static_cast<int32_t>(canvas.size()) <= slot_rows_, "canvas longer than its cache slot");
    const auto [first, last] = s->active_range();
    return batch_.add_cached_sequence(canvas, first, last, slot_row, s->attention_end()) - first;
  };
  for (Sampler* s : active) {
    if (!s->done() && model_.config().block_causal) batch_.block_size = s->settings().block_length;
  }
  for (Sampler* s : active) {
    if (s->done()) continue;
    const int32_t slot_row = any_cache ? slot_for(s, live) * slot_rows_ : 0;
    const int32_t start = add(s, s->canvas(), slot_row);
    spans.push_back({s, params_.size()});
    for (int32_t pos : s->wanted()) {
      batch_.out_rows.push_back(start + std::max(pos - shift, 0));
      params_.push_back(s->pick_params(pos));
    }
    const int64_t n_seqs = s->uses_cfg() ? 2 : 1;
    stats_.sequence_forwards += n_seqs;
    if (s->settings().cache != CacheMode::None)
      (s->refresh_step() ? stats_.cache_refreshes : stats_.cached_forwards) += n_seqs;
  }
  if (spans.empty()) return;
  const size_t n_cond = params_.size();
  // Unconditional twins after them: their logits rows follow at [n_cond, ...).
  for (size_t i = 0; i < spans.size(); i++) {
    Sampler* s = spans[i].sampler;
    if (!s->uses_cfg()) continue;
    const int32_t slot_row = any_cache ? (slots_[s] + 1) * slot_rows_ : 0;
    const int32_t start = add(s, s->unconditional_canvas(), slot_row);
    size_t k = spans[i].first_pick;
    for (int32_t pos : s->wanted()) {
      params_[k++].uncond_row = static_cast<int32_t>(batch_.out_rows.size() - n_cond);
      batch_.out_rows.push_back(start + std::max(pos - shift, 0));
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
  (any_refresh ? stats_.full_seconds : stats_.cached_seconds) += ms / 1000.0;
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
