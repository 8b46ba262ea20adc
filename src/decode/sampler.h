// The host-side unmasking loop of one request (DESIGN.md §4): LLaDA's semi-autoregressive blocks,
// or Dream's whole-answer loop on its timestep schedule.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "decode/settings.h"
#include "io/config.h"
#include "model/backend.h"

namespace unmask {

// Per-step counts: k // s each, plus one for the first k % s steps.
std::vector<int> transfer_counts(int masked, int steps);

// How many of the masked positions (confidences `conf`, any order) to commit this step: the
// scheduled count, raised by the threshold or factor rule when one is set (at least one then).
int commit_count(const std::vector<float>& conf, int scheduled, std::optional<float> threshold,
                 std::optional<float> factor = std::nullopt);

class Sampler {
 public:
  Sampler(std::vector<int32_t> prompt, const GenerationSettings& settings, const ModelConfig& config);

  bool done() const { return done_; }
  // The canvas to evaluate this step (prompt followed by the answer, masks included).
  const std::vector<int32_t>& canvas() const { return canvas_; }
  // The same canvas with the prompt's tokens masked: the unconditional input of classifier-free
  // guidance. Mask positions of the prompt keep what fills them.
  std::vector<int32_t> unconditional_canvas() const;
  bool uses_cfg() const { return settings_.cfg_scale > 0.f; }
  // Canvas positions whose logits this step needs, in position order: the block loop's masked
  // positions up to the current block's end (the prompt's masks included: infilling), or every
  // masked position in Dream's loop.
  const std::vector<int32_t>& wanted() const { return wanted_; }
  // Canvas positions [first, second) this step recomputes: the whole canvas without a cache and
  // at a block's first step (the cache refresh); then the block and everything after it
  // (prefix) or the block alone (dual), extended back to the first wanted position.
  // On shifted-logit models the range starts one earlier: position i's logits come from i - 1
  // (position 0 reads its own row, as the references' logits[:, :1] does).
  std::pair<int32_t, int32_t> active_range() const;
  bool refresh_step() const {
    if (llada2_loop()) return settings_.cache == CacheMode::None || !kv_written_;
    return settings_.cache == CacheMode::None || block_step_ == 0 || block_ < 0;
  }
  // Canvas positions [0, n) whose keys and values attention reads this step: the whole canvas,
  // or under LLaDA2's block-causal attention the window up to the current block's end.
  int32_t attention_end() const;
  PickParams pick_params(int32_t position) const;
  // Applies one step's picks (one per wanted() position, same order).
  void commit(const std::vector<PickResult>& picks);

  std::vector<int32_t> answer() const;  // the gen_length generated ids
  // answer() with the positions a later step may still rewrite shown as masks (LLaDA2.1 edits
  // the current block until it ends): what may be streamed. answer() once done().
  std::vector<int32_t> final_answer() const;
  // The prompt with its mask positions as filled (infilling); the prompt itself when it had none.
  std::vector<int32_t> filled_prompt() const;
  int prompt_masks() const { return prompt_masks_; }  // mask tokens written in the prompt
  // Masks still on the canvas: after done(), > 0 only when LLaDA's fixed schedule ran out because
  // prompt masks took some of the blocks' commits (or the request ended in an error). LLaDA2's
  // loop: masks in the text (before the first stop id), which its argmax leaves when it picks
  // the mask token.
  int masks_left() const;
  int prompt_length() const { return prompt_length_; }
  int steps_done() const { return step_; }
  int forwards() const { return step_ * (uses_cfg() ? 2 : 1); }
  bool dream_loop() const { return settings_.alg != Algorithm::Llada && !llada2_loop(); }
  bool llada2_loop() const { return settings_.alg == Algorithm::Llada2; }
  int edits() const { return edits_; }  // LLaDA2.1: committed tokens rewritten
  bool stopped_early() const { return stopped_early_; }
  // Non-empty when the request ended in an error (non-finite logits, nothing choosable); the
  // sampler is then done and its canvas incomplete.
  const std::string& error() const { return error_; }
  const std::vector<int>& steps_per_block() const { return steps_per_block_done_; }
  const std::vector<int>& commits_per_step() const { return commits_per_step_; }
  int cache_refreshes() const { return cache_refreshes_; }  // steps that rebuilt the KV cache
  int cached_steps() const { return cached_steps_; }        // steps that reused it
  const GenerationSettings& settings() const { return settings_; }

 private:
  void advance();            // moves to the next block with masks, or finishes
  void advance_dream();      // moves to the next schedule step that commits something, or finishes
  // The order in which this step's wanted positions commit, and how many of them do.
  std::vector<size_t> llada_order(const std::vector<PickResult>& picks, int& n) const;
  std::vector<size_t> dream_order(const std::vector<PickResult>& picks, int& n) const;
  bool text_is_final();      // an EOS is committed and everything before it is filled
  // LLaDA2's loops (llada2_loop.cpp).
  void start_llada2();
  void advance_llada2();     // the next forward of the current block, or the next block
  void commit_llada2(const std::vector<PickResult>& picks);
  void end_llada2_block();
  bool finish_early();       // eos_stop: the text is final; fills the tail, true when done

  GenerationSettings settings_;
  int32_t mask_id_;
  int32_t eos_id_;
  std::vector<int32_t> stop_ids_;
  int prompt_length_;
  std::vector<int32_t> canvas_;
  std::vector<bool> prompt_is_mask_;  // [prompt_length]: a mask written in the prompt
  int prompt_masks_ = 0;
  int first_candidate_ = 0;  // 0, or prompt_length when prompt masks are never filled
  int n_blocks_, steps_per_block_;
  int block_ = -1;              // current block
  int block_step_ = 0;          // step inside the current block
  std::vector<int> schedule_;   // transfer counts of the current block
  int step_ = 0;                // steps executed so far (the noise key of the block loop)
  bool shifted_ = false;        // the model's logits are shifted by one position
  std::vector<float> timesteps_;  // Dream's t_0..t_S
  int schedule_step_ = 0;       // Dream: index into the schedule (its noise key; skips included)
  int dream_count_ = 0;         // Dream: positions the pending step commits
  bool done_ = false;
  bool stopped_early_ = false;
  std::string error_;
  std::vector<int32_t> wanted_;
  std::vector<int> steps_per_block_done_;  // forwards spent in each block (stats)
  std::vector<int> commits_per_step_;      // tokens committed at each step (stats)
  int cache_refreshes_ = 0, cached_steps_ = 0;
  int answer_end_ = 0;          // prompt_length + gen_length: LLaDA2 pads the canvas past it
  // LLaDA2:
  int llada2_steps_ = 0;        // steps per block, clamped to gen_length as its generate() does
  int post_steps_ = 0;          // LLaDA2.1: forwards since the block's last mask was filled
  bool block_had_masks_ = false;  // LLaDA2.1: the pending forward's block held masks
  int block_iterations_ = 0;    // forwards in the current block
  bool kv_written_ = false;     // the cache holds the keys and values before the current block
  int edits_ = 0;
};

// Number of answer tokens before the first stop id (the "generated tokens" of the stats).
int text_length(const std::vector<int32_t>& answer, const std::vector<int32_t>& stop_ids);

}  // namespace unmask
