// The unmasking loops: LLaDA's blocks (transfer schedule, remasking, threshold) and Dream's
// timestep schedule; the early exit and the stats are shared.
#include "decode/sampler.h"

#include <algorithm>
#include <numeric>

#include "common.h"
#include "decode/dream_schedule.h"
#include "model/rng.h"

namespace unmask {

std::vector<int> transfer_counts(int masked, int steps) {
  std::vector<int> counts(steps, masked / steps);
  for (int j = 0; j < masked % steps; j++) counts[j]++;
  return counts;
}

int commit_count(const std::vector<float>& conf, int scheduled, std::optional<float> threshold,
                 std::optional<float> factor) {
  int n = scheduled;
  if (threshold) {
    const int above = static_cast<int>(
        std::count_if(conf.begin(), conf.end(), [&](float c) { return c >= *threshold; }));
    n = std::max({n, above, 1});
  }
  if (factor && !conf.empty()) {
    std::vector<float> sorted = conf;
    std::sort(sorted.begin(), sorted.end(), std::greater<float>());
    int accepted = 1;  // the most confident always commits
    for (int k = 2; k <= static_cast<int>(sorted.size()); k++) {
      if (sorted[k - 1] < 1.f - *factor / static_cast<float>(k + 1)) break;
      accepted = k;
    }
    n = std::max(n, accepted);
  }
  return std::min(n, static_cast<int>(conf.size()));
}

Sampler::Sampler(std::vector<int32_t> prompt, const GenerationSettings& settings,
                 const ModelConfig& config)
    : settings_(settings),
      mask_id_(config.mask_token_id),
      eos_id_(config.eos_token_id),
      stop_ids_(config.stop_token_ids),
      prompt_length_(static_cast<int>(prompt.size())),
      canvas_(std::move(prompt)),
      shifted_(config.shifted_logits) {
  validate_settings(settings, canvas_.size(), config);
  // note: a model whose mask is an ordinary token (llama-format dLLMs) keeps the prompt as
  // written: DiffuLLaMA's loop tracks the prompt by position, not by the mask id.
  first_candidate_ = config.infill_prompt_masks ? 0 : prompt_length_;
  prompt_is_mask_.resize(canvas_.size());
  for (size_t i = 0; i < canvas_.size(); i++)
    prompt_is_mask_[i] = config.infill_prompt_masks && canvas_[i] == mask_id_;
  prompt_masks_ = static_cast<int>(std::count(prompt_is_mask_.begin(), prompt_is_mask_.end(), true));
  canvas_.resize(canvas_.size() + settings.gen_length, mask_id_);
  answer_end_ = static_cast<int>(canvas_.size());
  if (llada2_loop()) {
    start_llada2();
    return;
  }
  if (dream_loop()) {
    timesteps_ = dream_timesteps(settings.steps, settings.eps);
    advance_dream();
    return;
  }
  n_blocks_ = settings.gen_length / settings.block_length;
  steps_per_block_ = settings.steps / n_blocks_;
  advance();
}

std::vector<int32_t> Sampler::unconditional_canvas() const {
  // The prompt's own tokens are masked; its mask positions keep whatever fills them (the
  // reference takes prompt_index = x != mask before the loop).
  std::vector<int32_t> u = canvas_;
  for (int i = 0; i < prompt_length_; i++)
    if (!prompt_is_mask_[i]) u[i] = mask_id_;
  return u;
}

PickParams Sampler::pick_params(int32_t position) const {
  PickParams p;
  p.seed = settings_.seed;
  p.step = static_cast<uint32_t>(dream_loop() ? schedule_step_ : step_);
  p.position = static_cast<uint32_t>(position);
  p.temperature = settings_.temperature;
  p.top_k = settings_.top_k;
  p.top_p = settings_.top_p;
  p.cfg_scale = settings_.cfg_scale;
  p.n_banned = settings_.no_eos ? 1 + static_cast<int32_t>(stop_ids_.size()) : 1;
  // LLaDA2's argmax runs over the whole vocabulary, the mask included; its confidence is the
  // probability under the tempered, filtered logits it samples from.
  p.first_banned = llada2_loop() ? 1 : 0;
  p.filtered_confidence = settings_.alg != Algorithm::Llada;
  return p;
}

std::pair<int32_t, int32_t> Sampler::active_range() const {
  const int32_t length = static_cast<int32_t>(canvas_.size());
  if (llada2_loop()) {
    // Uncached, or the first forward: the window up to the block's end (later blocks cannot
    // change it). Cached: the block, plus the block before when its final keys and values are
    // not written yet (its rows do not see this block, so they equal a forward of their own).
    const int32_t end = attention_end(), bl = settings_.block_length;
    if (refresh_step()) return {0, end};
    return {std::max(end - (block_step_ == 0 ? 2 : 1) * bl, 0), end};
  }
  if (refresh_step()) return {0, length};
  // From the block's start, or from the first masked position before it (a prompt mask, or one
  // an earlier block left), whose logits this step reads too.
  int32_t lo = prompt_length_ + block_ * settings_.block_length;
  if (!wanted_.empty()) lo = std::min(lo, wanted_.front());
  lo = std::max(lo - (shifted_ ? 1 : 0), 0);
  if (settings_.cache == CacheMode::Prefix) return {lo, length};
  return {lo, prompt_length_ + (block_ + 1) * settings_.block_length};
}

void Sampler::advance() {
  wanted_.clear();
  while (!done_) {
    if (block_ >= 0 && block_step_ < steps_per_block_) {
      // Every masked position up to the block's end competes: the block's, the prompt's, and any
      // an earlier block left (LLaDA's generate: confidence is -inf only after the block).
      const int hi = prompt_length_ + (block_ + 1) * settings_.block_length;
      for (int i = first_candidate_; i < hi; i++)
        if (canvas_[i] == mask_id_) wanted_.push_back(i);
      if (!wanted_.empty()) return;
    }
    // Next block: its schedule comes from the masks it holds at its start.
    block_++;
    block_step_ = 0;
    if (block_ >= n_blocks_) {
      done_ = true;
      return;
    }
    const int lo = prompt_length_ + block_ * settings_.block_length;
    const int masked = static_cast<int>(
        std::count(canvas_.begin() + lo, canvas_.begin() + lo + settings_.block_length, mask_id_));
    schedule_ = transfer_counts(masked, steps_per_block_);
  }
}

void Sampler::advance_dream() {
  wanted_.clear();
  for (; schedule_step_ < settings_.steps; schedule_step_++) {
    // Every masked position of the canvas, the prompt's included, counts and competes.
    std::vector<int32_t> masked;
    for (size_t i = first_candidate_; i < canvas_.size(); i++)
      if (canvas_[i] == mask_id_) masked.push_back(static_cast<int32_t>(i));
    if (masked.empty()) break;
    if (settings_.alg == Algorithm::Origin) {
      // Which positions transfer is decided before the forward, so only their logits are read.
      const double share = dream_transfer_share(timesteps_, schedule_step_);
      for (int32_t pos : masked)
        if (noise_uniform(noise_bits(settings_.seed, kStreamDreamTransfer,
                                     static_cast<uint32_t>(schedule_step_),
                                     static_cast<uint32_t>(pos), 0)) < share)
          wanted_.push_back(pos);
      dream_count_ = static_cast<int>(wanted_.size());
    } else {
      dream_count_ = dream_transfer_count(timesteps_, schedule_step_, static_cast<int>(masked.size()));
      if (dream_count_ > 0) wanted_ = std::move(masked);
    }
    // A step that commits nothing needs no forward.
    if (!wanted_.empty()) return;
  }
  done_ = true;
}

std::vector<size_t> Sampler::llada_order(const std::vector<PickResult>& picks, int& n) const {
  const size_t n_masked = wanted_.size();
  std::vector<float> conf(n_masked);
  for (size_t i = 0; i < n_masked; i++) {
    conf[i] = settings_.remasking == Remasking::LowConfidence
                  ? picks[i].prob
                  : static_cast<float>(noise_uniform(noise_bits(
                        settings_.seed, kStreamRemaskRandom, static_cast<uint32_t>(step_),
                        static_cast<uint32_t>(wanted_[i]), 0)));
  }
  if (settings_.eos_last) {
    // Stop tokens rank below every other pick, so they are committed only when the schedule
    // demands them (LLaDA's low-confidence EOS handling).
    for (size_t i = 0; i < n_masked; i++)
      if (std::find(stop_ids_.begin(), stop_ids_.end(), picks[i].token) != stop_ids_.end())
        conf[i] -= 2.f;  // below every confidence in [0, 1], order among them kept
  }
  n = commit_count(conf, schedule_[block_step_], settings_.threshold, settings_.factor);
  // Highest confidence first; ties: lowest position (wanted_ is in position order).
  std::vector<size_t> order(n_masked);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return conf[a] > conf[b]; });
  return order;
}

std::vector<size_t> Sampler::dream_order(const std::vector<PickResult>& picks, int& n) const {
  const size_t n_masked = wanted_.size();
  std::vector<size_t> order(n_masked);
  std::iota(order.begin(), order.end(), 0);
  n = dream_count_;
  if (settings_.alg == Algorithm::Origin) return order;  // every wanted position transfers
  std::vector<double> key(n_masked);
  for (size_t i = 0; i < n_masked; i++) {
    const PickResult& p = picks[i];
    key[i] = settings_.alg == Algorithm::MaskgitPlus  ? p.prob
             : settings_.alg == Algorithm::TopkMargin ? p.margin
                                                      : -static_cast<double>(p.entropy);
    // Sampling n positions without replacement from softmax(conf / alg_temp) is taking the n
    // largest of conf / alg_temp + Gumbel noise.
    if (settings_.alg_temp > 0.f) {
      key[i] = static_cast<double>(static_cast<float>(key[i])) / settings_.alg_temp +
               noise_gumbel(noise_bits(settings_.seed, kStreamDreamTransfer,
                                       static_cast<uint32_t>(schedule_step_),
                                       static_cast<uint32_t>(wanted_[i]), 0));
    }
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return key[a] > key[b]; });
  return order;
}

void Sampler::commit(const std::vector<PickResult>& picks) {
  UNMASK_CHECK(!done_ && picks.size() == wanted_.size(), "commit without a pending step");
  for (const PickResult& p : picks) {
    if (p.finite && p.token >= 0) continue;
    error_ = p.finite ? "no token can be chosen at step " + std::to_string(step_ + 1) +
                            ": every token of the vocabulary is banned"
                      : "non-finite logits at step " + std::to_string(step_ + 1) +
                            ": the weights contain NaN/Inf or the activations overflowed (check "
                            "with: unmask info --check-weights)";
    done_ = true;
    wanted_.clear();
    return;
  }
  if (llada2_loop()) {
    commit_llada2(picks);
    return;
  }
  int n = 0;
  const std::vector<size_t> order = dream_loop() ? dream_order(picks, n) : llada_order(picks, n);
  for (int i = 0; i < n; i++) canvas_[wanted_[order[i]]] = picks[order[i]].token;

  commits_per_step_.push_back(n);
  if (settings_.cache != CacheMode::None) (block_step_ == 0 ? cache_refreshes_ : cached_steps_)++;
  const int block = std::max(block_, 0);  // Dream's loop is one block: the whole answer
  if (static_cast<int>(steps_per_block_done_.size()) <= block) steps_per_block_done_.resize(block + 1, 0);
  steps_per_block_done_[block]++;
  step_++;
  block_step_++;
  schedule_step_++;
  if (settings_.eos_stop && finish_early()) return;
  if (dream_loop()) {
    advance_dream();
  } else {
    advance();
  }
}

bool Sampler::finish_early() {
  if (!text_is_final()) return false;
  for (int i = prompt_length_; i < answer_end_; i++)
    if (canvas_[i] == mask_id_) canvas_[i] = eos_id_;
  stopped_early_ = true;
  done_ = true;
  wanted_.clear();
  return true;
}

bool Sampler::text_is_final() {
  // A mask left in the prompt would still be filled: its text is not final.
  if (prompt_masks_ > 0 && std::find(canvas_.begin(), canvas_.begin() + prompt_length_, mask_id_) !=
                               canvas_.begin() + prompt_length_)
    return false;
  const auto end = canvas_.begin() + answer_end_;
  for (int i = prompt_length_; i < answer_end_; i++) {
    if (canvas_[i] == mask_id_) return false;
    if (std::find(stop_ids_.begin(), stop_ids_.end(), canvas_[i]) != stop_ids_.end()) {
      // Finishing early matters only when masks remain after the stop token.
      return std::find(canvas_.begin() + i, end, mask_id_) != end;
    }
  }
  return false;
}

std::vector<int32_t> Sampler::answer() const {
  return std::vector<int32_t>(canvas_.begin() + prompt_length_, canvas_.begin() + answer_end_);
}

std::vector<int32_t> Sampler::filled_prompt() const {
  return std::vector<int32_t>(canvas_.begin(), canvas_.begin() + prompt_length_);
}

int Sampler::masks_left() const {
  if (llada2_loop()) {  // masks in the text; the blocks after an EOS block are never run
    const auto from = canvas_.begin() + prompt_length_;
    return static_cast<int>(std::count(from, from + text_length(answer(), stop_ids_), mask_id_));
  }
  return static_cast<int>(std::count(canvas_.begin() + first_candidate_, canvas_.begin() + answer_end_, mask_id_));
}

int text_length(const std::vector<int32_t>& answer, const std::vector<int32_t>& stop_ids) {
  for (size_t i = 0; i < answer.size(); i++)
    if (std::find(stop_ids.begin(), stop_ids.end(), answer[i]) != stop_ids.end())
      return static_cast<int>(i);
  return static_cast<int>(answer.size());
}

}  // namespace unmask
