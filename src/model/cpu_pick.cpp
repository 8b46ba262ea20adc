// pick on the host: one logits row -> the chosen token and its confidence numbers. Used by the
// CPU backend and, as the oracle, by the CUDA tests.
#include <algorithm>
#include <cmath>
#include <limits>

#include "common.h"
#include "model/cpu_backend.h"
#include "model/rng.h"

namespace unmask {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Candidate order: score descending, lower index first on ties.
template <typename Score>
auto descending(Score score) {
  return [score](int32_t a, int32_t b) {
    const float sa = score(a), sb = score(b);
    return sa > sb || (sa == sb && a < b);
  };
}

// The candidate order, sorted only as far as a filter needs: top-p usually stops after a few
// dozen tokens, so sorting all of a 150k vocabulary per row (the cost of std::sort) is wasted.
// The sorted prefix grows geometrically by partial sorts of the unsorted rest.
template <typename Before>
class SortedPrefix {
 public:
  SortedPrefix(std::vector<int32_t>& ids, int64_t vocab, Before before)
      : ids_(ids), vocab_(vocab), before_(before) {
    ids_.resize(vocab);
    for (int64_t v = 0; v < vocab; v++) ids_[v] = static_cast<int32_t>(v);
  }
  // The i-th candidate in order.
  int32_t at(int64_t i) {
    if (i >= sorted_) extend(std::max<int64_t>({i + 1, 2 * sorted_, 64}));
    return ids_[i];
  }
  void extend(int64_t upto) {
    upto = std::min(upto, vocab_);
    if (upto <= sorted_) return;
    std::partial_sort(ids_.begin() + sorted_, ids_.begin() + upto, ids_.end(), before_);
    sorted_ = upto;
  }
  const int32_t* data() const { return ids_.data(); }

 private:
  std::vector<int32_t>& ids_;
  int64_t vocab_;
  Before before_;
  int64_t sorted_ = 0;
};

// The range of noise_gumbel: its uniform has 24 random bits, so g lies in [-2.85, 17.33].
const double kGumbelMin = noise_gumbel(0);
const double kGumbelMax = noise_gumbel(~uint64_t{0});

// The token among `candidates` (all of the row when null) maximising logit + T * Gumbel noise;
// -1 when every one is banned (-inf).
int64_t choose(const float* row, int64_t vocab, const int32_t* candidates, int64_t n,
               const PickParams& params) {
  auto score = [&](int64_t v) {
    if (params.temperature == 0.f) return row[v];
    const double g = noise_gumbel(noise_bits(params.seed, kStreamGumbel, params.step,
                                             params.position, static_cast<uint32_t>(v)));
    return row[v] + static_cast<float>(static_cast<double>(params.temperature) * g);
  };
  const int64_t count = candidates ? n : vocab;
  auto id = [&](int64_t i) { return candidates ? candidates[i] : i; };
  // The noise is the expensive part. The best logit m scores at least m + T * kGumbelMin, and a
  // token scores at most its logit + T * kGumbelMax, so a logit below the difference (less a
  // margin for float rounding) can neither win nor tie: its noise is never drawn.
  float cutoff = kNegInf;
  if (params.temperature > 0.f) {
    float m = kNegInf;
    for (int64_t i = 0; i < count; i++) m = std::max(m, row[id(i)]);
    const double spread = static_cast<double>(params.temperature) * (kGumbelMax - kGumbelMin);
    cutoff = static_cast<float>(m - spread - 1e-5 * (std::fabs(m) + spread + 1.0));
  }
  int64_t best = -1;
  float best_score = kNegInf;
  for (int64_t i = 0; i < count; i++) {
    const int64_t v = id(i);
    if (row[v] == kNegInf || row[v] < cutoff) continue;
    const float s = score(v);
    if (best < 0 || s > best_score || (s == best_score && v < best)) {
      best = v;
      best_score = s;
    }
  }
  return best;  // -1: every candidate is banned
}

// LLaDA's order: statistics of the unfiltered softmax, then top-k, then top-p over the survivors.
PickResult pick_unfiltered_confidence(const float* row, int64_t vocab, const PickParams& params,
                                      std::vector<int32_t>& scratch) {

  // Statistics under the unfiltered logits, with one exp per entry: the top two logits give the
  // margin, and the entropy is log S - (sum of e * d) / S for e = exp(d), d = logit - max.
  float mx = kNegInf, second = kNegInf;  // equal maxima fill both
  for (int64_t v = 0; v < vocab; v++) {
    if (row[v] > mx) {
      second = mx;
      mx = row[v];
    } else if (row[v] > second) {
      second = row[v];
    }
  }
  double sum = 0, weighted = 0;
  for (int64_t v = 0; v < vocab; v++) {
    const double d = static_cast<double>(row[v]) - mx;
    const double e = std::exp(d);
    if (e > 0) {
      sum += e;
      weighted += e * d;
    }
  }
  const double entropy = std::log(sum) - weighted / sum;
  const double p1 = 1.0 / sum, p2 = std::exp(static_cast<double>(second) - mx) / sum;

  // Candidate filter: top-k, then top-p over the survivors. Order: logit desc, index asc.
  const bool use_top_k = params.top_k > 0 && params.top_k < vocab;
  const bool use_top_p = params.top_p > 0.f && params.top_p < 1.f;
  int64_t n_kept = vocab;
  if (use_top_k || use_top_p) {
    SortedPrefix order(scratch, vocab, descending([row](int64_t v) { return row[v]; }));
    if (use_top_k) {
      n_kept = params.top_k;
      order.extend(n_kept);
    }
    if (use_top_p) {
      // The survivors' normaliser: the top-k set, or the whole row (its sum is known already).
      double kept_sum = sum;
      if (use_top_k) {
        kept_sum = 0;
        for (int64_t i = 0; i < n_kept; i++) kept_sum += std::exp(static_cast<double>(row[order.at(i)]) - mx);
      }
      double cumulative = 0;
      int64_t keep = 0;
      while (keep < n_kept && cumulative < params.top_p) {
        cumulative += std::exp(static_cast<double>(row[order.at(keep)]) - mx) / kept_sum;
        keep++;
      }
      n_kept = keep;
    }
  }

  const int64_t best = choose(row, vocab, n_kept == vocab ? nullptr : scratch.data(), n_kept, params);
  if (best < 0) return PickResult{};  // the sampler reports it

  PickResult result;
  result.token = static_cast<int32_t>(best);
  result.prob = static_cast<float>(std::exp(static_cast<double>(row[best]) - mx) / sum);
  result.margin = static_cast<float>(p1 - p2);
  result.entropy = static_cast<float>(entropy);
  return result;
}


// Dream's sample_tokens: logits / T, top-p over the whole tempered distribution (an entry stays
// while the mass before it is <= top_p), then top-k, and every statistic from the renormalised
// survivors; the entropy carries Dream's log(p + 1e-10).
PickResult pick_filtered_confidence(const float* row, int64_t vocab, const PickParams& params,
                                    std::vector<int32_t>& scratch) {
  const float temperature = params.temperature > 0.f ? params.temperature : 1.f;
  auto tempered = [&](int64_t v) { return row[v] / temperature; };
  const bool use_top_k = params.top_k > 0 && params.top_k < vocab;
  const bool use_top_p = params.top_p > 0.f && params.top_p < 1.f;
  const int32_t* kept = nullptr;
  int64_t n_kept = vocab;
  if (use_top_k || use_top_p) {
    SortedPrefix order(scratch, vocab, descending(tempered));
    if (use_top_p) {
      const float top = tempered(order.at(0));
      double total = 0;
      for (int64_t v = 0; v < vocab; v++) total += std::exp(static_cast<double>(tempered(v)) - top);
      double mass_before = 0;
      int64_t keep = 0;
      while (keep < vocab && mass_before <= params.top_p) {
        mass_before += std::exp(static_cast<double>(tempered(order.at(keep))) - top) / total;
        keep++;
      }
      n_kept = keep;
    }
    if (use_top_k && params.top_k < n_kept) n_kept = params.top_k;
    order.extend(n_kept);
    kept = order.data();
  }
  const int64_t best = choose(row, vocab, kept, n_kept, params);
  if (best < 0) return PickResult{};  // the sampler reports it

  auto entry = [&](int64_t i) -> int64_t { return kept ? kept[i] : i; };
  float top = kNegInf;
  for (int64_t i = 0; i < n_kept; i++) top = std::max(top, tempered(entry(i)));
  double sum = 0;
  for (int64_t i = 0; i < n_kept; i++) sum += std::exp(static_cast<double>(tempered(entry(i))) - top);
  double neg_entropy = 0, p1 = 0, p2 = 0;
  for (int64_t i = 0; i < n_kept; i++) {
    const double p = std::exp(static_cast<double>(tempered(entry(i))) - top) / sum;
    neg_entropy += p * std::log(p + 1e-10);
    if (p > p1) {
      p2 = p1;
      p1 = p;
    } else if (p > p2) {
      p2 = p;
    }
  }
  PickResult result;
  result.token = static_cast<int32_t>(best);
  result.prob = static_cast<float>(std::exp(static_cast<double>(tempered(best)) - top) / sum);
  result.margin = static_cast<float>(p1 - p2);
  result.entropy = static_cast<float>(-neg_entropy);
  return result;
}

}  // namespace

PickResult pick_row(float* row, const float* uncond_row, int64_t vocab, const PickParams& params,
                    const std::vector<int32_t>& banned, std::vector<int32_t>& scratch) {
  if (uncond_row) {
    const float w1 = params.cfg_scale + 1.f;
    for (int64_t v = 0; v < vocab; v++) row[v] = uncond_row[v] + w1 * (row[v] - uncond_row[v]);
  }
  // note: before the bans, which write -inf; a NaN would otherwise lose every comparison and an
  // all-NaN row would silently pick token 0.
  bool finite = true;
  for (int64_t v = 0; v < vocab; v++) finite &= std::isfinite(row[v]);
  if (!finite) {
    PickResult bad;
    bad.finite = false;
    return bad;
  }
  const size_t n_banned = params.n_banned < 0
                              ? banned.size()
                              : std::min(banned.size(), static_cast<size_t>(params.n_banned));
  for (size_t i = static_cast<size_t>(std::max(params.first_banned, 0)); i < n_banned; i++)
    if (banned[i] >= 0 && banned[i] < vocab) row[banned[i]] = kNegInf;
  return params.filtered_confidence ? pick_filtered_confidence(row, vocab, params, scratch)
                                    : pick_unfiltered_confidence(row, vocab, params, scratch);
}

}  // namespace unmask
