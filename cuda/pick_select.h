// The pick algorithm's decision steps, shared by the CUDA kernel and a sequential host model of it.
//
// pick_row (cpu_backend.cpp) sorts the row for top-k/top-p; a GPU block cannot, so the kernel finds
// the boundary of the kept set instead: the kept set is always a prefix of the order "logit desc,
// index asc", so it is "key > t, or key == t and index <= i" for one boundary (t, i). t comes from
// a radix select over order-preserving 32-bit keys (4 digits of 8 bits, one histogram pass per
// digit), i from a second radix select over the tied indices when ties straddle the boundary.
// top-p descends the same digits with per-bin probability mass in 2^-60 fixed point, so the
// histogram sums are exact and the result does not depend on the order of atomic adds.
// The filtered_confidence mode (Dream) runs the same selects on the tempered values; see
// pick_row_model_filtered.
// pick_row_model() runs these steps sequentially; tests check it against pick_row on the CPU.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "model/backend.h"
#include "model/rng.h"

namespace unmask::pick {

constexpr int kBins = 256;
constexpr int kLevels = 4;
constexpr double kFixedOne = 1152921504606846976.0;  // 2^60: probability 1 in fixed point

UNMASK_HOST_DEVICE uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
#endif
}

UNMASK_HOST_DEVICE float bits_float(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float x;
  std::memcpy(&x, &b, 4);
  return x;
#endif
}

// Unsigned key with the order of the floats; -0 and +0 share a key, as they compare equal.
UNMASK_HOST_DEVICE uint32_t order_key(float x) {
  if (x == 0.f) x = 0.f;
  const uint32_t b = float_bits(x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

UNMASK_HOST_DEVICE float key_value(uint32_t key) {
  return bits_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

// Classifier-free guidance, rounded exactly as pick_row's `u + w1 * (l - u)` (no FMA contraction).
UNMASK_HOST_DEVICE float cfg_combine(float cond, float uncond, float w1) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(uncond, __fmul_rn(w1, __fsub_rn(cond, uncond)));
#else
  return uncond + w1 * (cond - uncond);
#endif
}

// The Gumbel-perturbed score of token v, as pick_row computes it.
UNMASK_HOST_DEVICE float pick_score(float x, const PickParams& p, uint32_t v) {
  if (p.temperature == 0.f) return x;
  const double g = noise_gumbel(noise_bits(p.seed, kStreamGumbel, p.step, p.position, v));
  return x + static_cast<float>(static_cast<double>(p.temperature) * g);
}

// The running winner: highest score, lowest index on ties.
struct Best {
  float score = 0.f;
  int32_t index = -1;
  float value = 0.f;  // the unperturbed logit, for the probability
};

UNMASK_HOST_DEVICE bool beats(float score, int32_t index, const Best& b) {
  return b.index < 0 || score > b.score || (score == b.score && index < b.index);
}

UNMASK_HOST_DEVICE void merge_best(Best& a, const Best& b) {
  if (b.index >= 0 && beats(b.score, b.index, a)) a = b;
}

// Top two values of a multiset (equal maxima fill both), for the probability margin.
UNMASK_HOST_DEVICE void top2_push(float x, float& t1, float& t2) {
  if (x > t1) {
    t2 = t1;
    t1 = x;
  } else if (x > t2) {
    t2 = x;
  }
}

// Keeps (key, index) when it comes no later than the boundary in "key desc, index asc".
// The default boundary keeps everything.
struct Boundary {
  uint32_t key = 0;
  uint32_t index = 0xffffffffu;
};

UNMASK_HOST_DEVICE bool keeps(const Boundary& b, uint32_t key, uint32_t index) {
  return key > b.key || (key == b.key && index <= b.index);
}

UNMASK_HOST_DEVICE int digit_shift(int level) { return 24 - 8 * level; }

// Whether `key` still competes after `level` digits matched `prefix`.
UNMASK_HOST_DEVICE bool in_running(int level, uint32_t prefix, uint32_t key) {
  return level == 0 || (key >> (32 - 8 * level)) == (prefix >> (32 - 8 * level));
}

UNMASK_HOST_DEVICE int digit_of(int level, uint32_t key) {
  return static_cast<int>((key >> digit_shift(level)) & 0xffu);
}

// Radix select of the element of rank `rank` (0-based) in descending key order.
struct RankSelect {
  uint32_t prefix = 0;  // decided high digits, low bits zero
  int level = 0;        // digits decided
  uint32_t rank = 0;    // rank sought inside the running set; after 4 levels, rank among ties
  uint32_t count = 0;   // elements in the chosen bin; after 4 levels, elements equal to prefix
};

// One digit: scans the histogram of the running set from the top bin down. False when the
// rank is out of range (a bug in the caller).
UNMASK_HOST_DEVICE bool rank_step(RankSelect& s, const uint32_t* hist) {
  uint32_t above = 0;
  for (int b = kBins - 1; b >= 0; b--) {
    if (s.rank < above + hist[b]) {
      s.prefix |= static_cast<uint32_t>(b) << digit_shift(s.level);
      s.rank -= above;
      s.count = hist[b];
      s.level++;
      return true;
    }
    above += hist[b];
  }
  return false;
}

UNMASK_HOST_DEVICE uint64_t to_fixed(double p) { return static_cast<uint64_t>(p * kFixedOne + 0.5); }

// Top-p descent: the bin holding the last kept element, i.e. the first element (descending) at
// which the cumulative mass reaches top_p.
struct MassSelect {
  uint32_t prefix = 0;
  int level = 0;
  uint64_t above = 0;  // fixed-point mass of the candidates with a larger key
  uint32_t count = 0;  // candidates in the chosen bin; after 4 levels, those equal to prefix
  bool found = false;  // false after a step: the candidates hold less than top_p, all are kept
};

UNMASK_HOST_DEVICE void mass_step(MassSelect& s, const uint32_t* count, const uint64_t* mass,
                                  uint64_t target) {
  uint64_t above = 0;
  for (int b = kBins - 1; b >= 0; b--) {
    if (count[b] == 0) continue;
    if (s.above + above + mass[b] >= target) {
      s.prefix |= static_cast<uint32_t>(b) << digit_shift(s.level);
      s.above += above;
      s.count = count[b];
      s.level++;
      s.found = true;
      return;
    }
    above += mass[b];
  }
  s.found = false;
}

// How many of n tied candidates of probability p_tie top-p keeps after mass `above`: pick_row's
// loop "keep while the cumulative mass before the token < top_p". At least one, as above < top_p.
UNMASK_HOST_DEVICE uint32_t ties_kept(double above, double p_tie, uint32_t n, float top_p) {
  if (p_tie <= 0) return n;
  double cumulative = above;
  uint32_t keep = 0;
  while (keep < n && cumulative < top_p) {
    cumulative += p_tie;
    keep++;
  }
  return keep < 1 ? 1 : keep;
}

// Dream's top-p rule for the same ties: "keep while the mass before the token <= top_p".
UNMASK_HOST_DEVICE uint32_t ties_kept_at_most(double above, double p_tie, uint32_t n, float top_p) {
  if (p_tie <= 0) return n;
  double cumulative = above;
  uint32_t keep = 0;
  while (keep < n && cumulative <= top_p) {
    cumulative += p_tie;
    keep++;
  }
  return keep < 1 ? 1 : keep;
}

// --- the host model's selections, one histogram pass per digit over the whole row ---

// The rank-th (0-based, by index) of the entries whose key is tie_key inside `within`.
template <class KeyOf>
uint32_t model_tie_index(int64_t vocab, KeyOf key_of, uint32_t tie_key, const Boundary& within,
                         uint32_t rank) {
  uint32_t hist[kBins];
  RankSelect is;
  is.rank = rank;
  for (int level = 0; level < kLevels; level++) {
    for (uint32_t& h : hist) h = 0;
    for (int64_t v = 0; v < vocab; v++) {
      const uint32_t key = key_of(v), ikey = ~static_cast<uint32_t>(v);
      if (key == tie_key && keeps(within, key, static_cast<uint32_t>(v)) &&
          in_running(level, is.prefix, ikey))
        hist[digit_of(level, ikey)]++;
    }
    if (!rank_step(is, hist)) return 0xffffffffu;
  }
  return ~is.prefix;
}

// The top-k boundary over every entry.
template <class KeyOf>
Boundary model_top_k(int64_t vocab, KeyOf key_of, int32_t k) {
  uint32_t hist[kBins];
  RankSelect rs;
  rs.rank = static_cast<uint32_t>(k - 1);
  for (int level = 0; level < kLevels; level++) {
    for (uint32_t& h : hist) h = 0;
    for (int64_t v = 0; v < vocab; v++) {
      const uint32_t key = key_of(v);
      if (in_running(level, rs.prefix, key)) hist[digit_of(level, key)]++;
    }
    rank_step(rs, hist);
  }
  Boundary b;
  b.key = rs.prefix;
  if (rs.rank + 1 < rs.count) b.index = model_tie_index(vocab, key_of, rs.prefix, Boundary{}, rs.rank);
  return b;
}

// The top-p boundary over the entries inside `within`, each weighing exp(value - mx) / norm.
// at_most: Dream's rule (keep while the mass before is <= top_p), else LLaDA's (< top_p).
template <class ValueOf>
Boundary model_top_p(int64_t vocab, ValueOf value_of, const Boundary& within, float mx, double norm,
                     float top_p, bool at_most) {
  auto key_of = [&](int64_t v) { return order_key(value_of(v)); };
  uint32_t hist[kBins];
  uint64_t mass[kBins];
  const uint64_t target = to_fixed(static_cast<double>(top_p)) + (at_most ? 1 : 0);
  MassSelect ms;
  for (int level = 0; level < kLevels; level++) {
    for (int b = 0; b < kBins; b++) hist[b] = 0, mass[b] = 0;
    for (int64_t v = 0; v < vocab; v++) {
      const float x = value_of(v);
      const uint32_t key = order_key(x);
      if (!keeps(within, key, static_cast<uint32_t>(v)) || !in_running(level, ms.prefix, key)) continue;
      hist[digit_of(level, key)]++;
      mass[digit_of(level, key)] += to_fixed(std::exp(static_cast<double>(x) - mx) / norm);
    }
    mass_step(ms, hist, mass, target);
    if (!ms.found) break;
  }
  Boundary b;
  if (!ms.found) return b;  // the candidates hold less than top_p: all are kept
  const double p_tie = std::exp(static_cast<double>(key_value(ms.prefix)) - mx) / norm;
  const double above = static_cast<double>(ms.above) / kFixedOne;
  const uint32_t keep = at_most ? ties_kept_at_most(above, p_tie, ms.count, top_p)
                                : ties_kept(above, p_tie, ms.count, top_p);
  b.key = ms.prefix;
  if (keep < ms.count) b.index = model_tie_index(vocab, key_of, ms.prefix, within, keep - 1);
  return b;
}

// Dream's tempered logit: x / T for T > 0, else x (T = 0 is the plain argmax), rounded as pick_row.
UNMASK_HOST_DEVICE float temper(float x, float temperature) {
  if (!(temperature > 0.f)) return x;
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(x, temperature);
#else
  return x / temperature;
#endif
}

// The filtered_confidence mode (Dream's sample_tokens) over the tempered values lt = temper(x).
// Top-p runs over the whole distribution and top-k after it; both keep a prefix of the order
// "lt desc, index asc", so the kept set is the intersection of a top-k boundary and a top-p
// boundary, each computed over every entry. Top-p keeps an entry while the mass before it is
// <= top_p: its last kept entry is the first whose inclusive mass exceeds top_p, i.e. reaches
// target + 1 in fixed point, and ties_kept_at_most splits ties there. The statistics come from
// softmax(lt) renormalised over the survivors; the token maximises the raw x + T * Gumbel.
template <class Val>
PickResult pick_row_model_filtered(Val val, int64_t vocab, const PickParams& p) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  auto lt = [&](int64_t v) { return temper(val(v), p.temperature); };
  auto key_of = [&](int64_t v) { return order_key(lt(v)); };
  const bool use_top_k = p.top_k > 0 && p.top_k < vocab;
  const bool use_top_p = p.top_p > 0.f && p.top_p < 1.f;

  // Pass 1: the tempered maximum (the first entry of the order, always kept).
  float mx = kNegInf;
  for (int64_t v = 0; v < vocab; v++) {
    const float l = lt(v);
    mx = l > mx ? l : mx;
  }
  PickResult r;
  if (mx == kNegInf) return r;

  Boundary top_k, top_p;
  if (use_top_k) top_k = model_top_k(vocab, key_of, p.top_k);
  if (use_top_p) {
    // Pass 2: the full normaliser; the mass descent runs over every entry.
    double total = 0;
    for (int64_t v = 0; v < vocab; v++) total += std::exp(static_cast<double>(lt(v)) - mx);
    top_p = model_top_p(vocab, lt, Boundary{}, mx, total, p.top_p, /*at_most=*/true);
  }

  // Survivors: their normaliser, top two and the winner (scored on the raw value).
  auto survives = [&](uint32_t key, int64_t v) {
    return keeps(top_k, key, static_cast<uint32_t>(v)) && keeps(top_p, key, static_cast<uint32_t>(v));
  };
  double sum = 0;
  float t1 = kNegInf, t2 = kNegInf;
  Best best;
  for (int64_t v = 0; v < vocab; v++) {
    const float x = val(v), l = temper(x, p.temperature);
    if (!survives(order_key(l), v)) continue;
    top2_push(l, t1, t2);
    sum += std::exp(static_cast<double>(l) - mx);
    if (x != kNegInf) {
      const float s = pick_score(x, p, static_cast<uint32_t>(v));
      if (beats(s, static_cast<int32_t>(v), best)) best = {s, static_cast<int32_t>(v), x};
    }
  }
  if (best.index < 0) return r;
  // Dream's entropy, -sum p log(p + 1e-10), needs the normaliser first: one more pass.
  double neg_entropy = 0;
  for (int64_t v = 0; v < vocab; v++) {
    const float l = lt(v);
    if (!survives(order_key(l), v)) continue;
    const double q = std::exp(static_cast<double>(l) - mx) / sum;
    neg_entropy += q * std::log(q + 1e-10);
  }
  r.token = best.index;
  r.prob = static_cast<float>(std::exp(static_cast<double>(temper(best.value, p.temperature)) - mx) / sum);
  r.margin = static_cast<float>(std::exp(static_cast<double>(t1) - mx) / sum -
                                std::exp(static_cast<double>(t2) - mx) / sum);
  r.entropy = static_cast<float>(-neg_entropy);
  return r;
}

// Sequential model of the kernel: same steps, same arithmetic, histograms by a plain loop.
// token -1 when every candidate is banned; finite false (token -1) when the CFG-combined row holds
// a NaN or an infinity before the bans (the kernel finds it in its first pass).
inline PickResult pick_row_model(const float* logits, const float* uncond, int64_t vocab,
                                 const PickParams& p, const std::vector<int32_t>& banned) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const bool use_cfg = p.cfg_scale > 0.f && uncond != nullptr;
  const float w1 = p.cfg_scale + 1.f;
  auto raw = [&](int64_t v) { return use_cfg ? cfg_combine(logits[v], uncond[v], w1) : logits[v]; };
  for (int64_t v = 0; v < vocab; v++) {
    if (!std::isfinite(raw(v))) {
      PickResult bad;
      bad.finite = false;
      return bad;
    }
  }
  auto val = [&](int64_t v) {
    float x = raw(v);
    const size_t n_banned = p.n_banned < 0 ? banned.size()
                                           : std::min(banned.size(), static_cast<size_t>(p.n_banned));
    const size_t first_banned = std::min(static_cast<size_t>(std::max(p.first_banned, 0)), n_banned);
    for (size_t i = first_banned; i < n_banned; i++)
      if (banned[i] == v) x = kNegInf;
    return x;
  };
  if (p.filtered_confidence) return pick_row_model_filtered(val, vocab, p);
  const bool use_top_k = p.top_k > 0 && p.top_k < vocab;
  const bool use_top_p = p.top_p > 0.f && p.top_p < 1.f;
  const bool filtered = use_top_k || use_top_p;

  // Pass 1: max, top two, and the winner when nothing is filtered.
  float mx = kNegInf, t1 = kNegInf, t2 = kNegInf;
  Best best;
  for (int64_t v = 0; v < vocab; v++) {
    const float x = val(v);
    mx = x > mx ? x : mx;
    top2_push(x, t1, t2);
    if (!filtered && x != kNegInf) {
      const float s = pick_score(x, p, static_cast<uint32_t>(v));
      if (beats(s, static_cast<int32_t>(v), best)) best = {s, static_cast<int32_t>(v), x};
    }
  }
  PickResult r;
  if (mx == kNegInf) return r;
  // Pass 2: sum of exp and sum of exp * (x - max), for the entropy log S - T / S.
  double sum = 0, tsum = 0;
  for (int64_t v = 0; v < vocab; v++) {
    const double d = static_cast<double>(val(v)) - mx;
    const double e = std::exp(d);
    if (e > 0) {
      sum += e;
      tsum += e * d;
    }
  }

  if (filtered) {
    Boundary top_k, top_p;
    if (use_top_k) top_k = model_top_k(vocab, [&](int64_t v) { return order_key(val(v)); }, p.top_k);
    if (use_top_p) {
      double kept_sum = 0;
      if (use_top_k) {
        for (int64_t v = 0; v < vocab; v++) {
          const float x = val(v);
          if (keeps(top_k, order_key(x), static_cast<uint32_t>(v)))
            kept_sum += std::exp(static_cast<double>(x) - mx);
        }
      } else {
        kept_sum = sum;
      }
      top_p = model_top_p(vocab, val, top_k, mx, kept_sum, p.top_p, /*at_most=*/false);
    }
    for (int64_t v = 0; v < vocab; v++) {
      const float x = val(v);
      const uint32_t key = order_key(x);
      if (x == kNegInf || !keeps(top_k, key, static_cast<uint32_t>(v)) ||
          !keeps(top_p, key, static_cast<uint32_t>(v)))
        continue;
      const float s = pick_score(x, p, static_cast<uint32_t>(v));
      if (beats(s, static_cast<int32_t>(v), best)) best = {s, static_cast<int32_t>(v), x};
    }
  }
  if (best.index < 0) return r;
  r.token = best.index;
  r.prob = static_cast<float>(std::exp(static_cast<double>(best.value) - mx) / sum);
  r.margin = static_cast<float>(std::exp(static_cast<double>(t1) - mx) / sum -
                                std::exp(static_cast<double>(t2) - mx) / sum);
  r.entropy = static_cast<float>(std::log(sum) - tsum / sum);
  return r;
}

}  // namespace unmask::pick
