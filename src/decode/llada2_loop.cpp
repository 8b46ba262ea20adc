// LLaDA2's generation loops (its generate(), LLaDA2.0 and LLaDA2.1): LLaDA2.0's thresholded mask-to-token commits on
// a per-block step schedule, and LLaDA2.1's token editing; blocks aligned at canvas position 0,
// block-causal attention, an exact KV cache of finished blocks.
#include <algorithm>
#include <numeric>

#include "common.h"
#include "decode/sampler.h"

namespace unmask {

namespace {
bool contains(const std::vector<int32_t>& ids, int32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}
}  // namespace

std::vector<int32_t> Sampler::final_answer() const {
  std::vector<int32_t> a = answer();
  if (done_ || !llada2_loop() || !settings_.editing_threshold) return a;
  const int first = std::clamp(block_ * settings_.block_length - prompt_length_, 0, static_cast<int>(a.size()));
  std::fill(a.begin() + first, a.end(), mask_id_);
  return a;
}

int32_t Sampler::attention_end() const {
  if (!llada2_loop()) return static_cast<int32_t>(canvas_.size());
  return std::min(static_cast<int32_t>(canvas_.size()), (block_ + 1) * settings_.block_length);
}

void Sampler::start_llada2() {
  const int bl = settings_.block_length;
  // The canvas ends on a block boundary past the answer; the first block may hold the prompt's
  // tail. steps = min(steps, gen_length // minimal_topk), minimal_topk 1.
  const int blocks = (answer_end_ + bl - 1) / bl;
  canvas_.resize(static_cast<size_t>(blocks) * bl, mask_id_);
  n_blocks_ = blocks;
  llada2_steps_ = std::min(settings_.steps, settings_.gen_length);
  // The schedule comes from the block length, not from the block's masks: steps > block length
  // leaves trailing zero counts.
  schedule_ = transfer_counts(bl, llada2_steps_);
  block_ = prompt_length_ / bl - 1;
  end_llada2_block();
}

// Moves to the next block (or finishes); the per-block EOS rule of LLaDA2.0 runs first.
void Sampler::end_llada2_block() {
  const int bl = settings_.block_length;
  if (block_ >= prompt_length_ / bl) {
    const auto from = canvas_.begin() + prompt_length_;
    // note: up to the block's end, past the answer's when the canvas is padded, as the reference.
    const auto to = canvas_.begin() + (block_ + 1) * bl;
    const bool eos = std::find(from, to, eos_id_) != to;
    // LLaDA2.0 always stops after a block holding EOS; LLaDA2.1 only under its early stop
    // (unmask's --eos-stop), and only once nothing before the EOS is masked. Both leave the
    // text as it would end: later blocks cannot change earlier ones.
    const bool stop = settings_.editing_threshold ? settings_.eos_stop && eos && std::find(from, to, mask_id_) == to
                                                  : eos;
    if (stop) {
      if (settings_.eos_stop) finish_early();
      if (!done_) {
        stopped_early_ = block_ + 1 < n_blocks_;
        done_ = true;
        wanted_.clear();
      }
      return;
    }
  }
  block_++;
  block_step_ = 0;
  post_steps_ = 0;
  block_iterations_ = 0;
  if (block_ >= n_blocks_) {
    done_ = true;
    wanted_.clear();
    return;
  }
  advance_llada2();
}

void Sampler::advance_llada2() {
  wanted_.clear();
  const int bl = settings_.block_length, lo = block_ * bl, hi = lo + bl;
  int masked = 0;
  for (int i = lo; i < hi; i++) masked += canvas_[i] == mask_id_;
  if (!settings_.editing_threshold) {
    // LLaDA2.0: at most `steps` forwards per block, while masks remain.
    if (masked == 0 || block_step_ >= llada2_steps_) return end_llada2_block();
    for (int i = lo; i < hi; i++)
      if (canvas_[i] == mask_id_) wanted_.push_back(i);
    return;
  }
  // LLaDA2.1: after the last mask, up to max_post_steps editing forwards.
  block_had_masks_ = masked > 0;
  if (masked == 0 && ++post_steps_ > settings_.max_post_steps) return end_llada2_block();
  // Every masked position and every answer position of the block: edits may rewrite the latter
  // (prompt positions are protected).
  for (int i = lo; i < hi; i++)
    if (canvas_[i] == mask_id_ || i >= prompt_length_) wanted_.push_back(i);
}

void Sampler::commit_llada2(const std::vector<PickResult>& picks) {
  const size_t n = wanted_.size();
  const float threshold = settings_.threshold.value_or(kLlada2Threshold);
  std::vector<size_t> masked;  // indices into wanted_ of masked positions
  for (size_t i = 0; i < n; i++)
    if (canvas_[wanted_[i]] == mask_id_) masked.push_back(i);
  // Mask to token: every masked position whose confidence is strictly above the threshold, when
  // there are at least the step's count of them (LLaDA2.1: at least one); else the count most
  // confident (ties: the lower position).
  const int scheduled = settings_.editing_threshold ? 1 : schedule_[static_cast<size_t>(block_step_)];
  std::vector<size_t> commit;
  for (size_t i : masked)
    if (picks[i].prob > threshold) commit.push_back(i);
  if (static_cast<int>(commit.size()) < scheduled) {
    commit = masked;
    std::stable_sort(commit.begin(), commit.end(), [&](size_t a, size_t b) { return picks[a].prob > picks[b].prob; });
    commit.resize(std::min(commit.size(), static_cast<size_t>(scheduled)));
  }
  // Token to token (LLaDA2.1): a committed answer token whose prediction changed, confidently.
  int changed = 0, edited = 0;
  if (settings_.editing_threshold) {
    for (size_t i = 0; i < n; i++) {
      const int32_t pos = wanted_[i];
      if (canvas_[pos] != mask_id_ && pos >= prompt_length_ && picks[i].prob > *settings_.editing_threshold &&
          picks[i].token != canvas_[pos]) {
        canvas_[pos] = picks[i].token;
        edited++;
      }
    }
  }
  for (size_t i : commit) {
    // note: committing the mask token leaves the position masked, as the reference does.
    changed += picks[i].token != mask_id_;
    canvas_[wanted_[i]] = picks[i].token;
  }
  edits_ += edited;
  commits_per_step_.push_back(changed);
  if (settings_.cache != CacheMode::None) (kv_written_ ? cached_steps_ : cache_refreshes_)++;
  kv_written_ = true;
  if (static_cast<int>(steps_per_block_done_.size()) <= block_) steps_per_block_done_.resize(block_ + 1, 0);
  steps_per_block_done_[static_cast<size_t>(block_)]++;
  step_++;
  block_step_++;
  block_iterations_++;

  if (settings_.editing_threshold) {
    // At temperature 0 a forward that changes nothing while masks remain would repeat forever
    // (the mask token wins wherever it is masked): LLaDA2.1's loop never ends there.
    const bool stuck = block_had_masks_ && changed == 0 && edited == 0 &&
                       (settings_.temperature == 0.f ||
                        block_iterations_ > kLlada2IterationsPerPosition * settings_.block_length +
                                                settings_.max_post_steps);
    if (stuck) {
      error_ = "LLaDA2.1's loop cannot finish block " + std::to_string(block_ + 1) +
               ": the mask token is the most likely token at every masked position left (" +
               std::to_string(masks_left()) + " masks), so no forward changes anything; lower "
               "--threshold, or use LLaDA2.0's loop (no --editing-threshold)";
      done_ = true;
      wanted_.clear();
      return;
    }
    if (!block_had_masks_ && edited == 0) return end_llada2_block();
  } else if (settings_.eos_stop && std::any_of(commit.begin(), commit.end(), [&](size_t i) {
               return contains(stop_ids_, picks[i].token);
             })) {
    // LLaDA2.0 never rewrites a committed token: an EOS with nothing masked before it is final.
    if (finish_early()) return;
  }
  advance_llada2();
}

}  // namespace unmask
