// Helpers over the reference fixtures shared by the CPU and GPU test binaries: a generate.json
// or families.json case's settings, a pick.json case's parameters and expected result, and the
// comparison of two picks.
#pragma once

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "decode/sampler.h"
#include "model/backend.h"

namespace unmask::test {

// The PickParams of a pick.json case; its unconditional logits, when present, are row 0.
inline PickParams pick_params_of(const nlohmann::json& c) {
  PickParams p;
  p.seed = c["seed"].get<uint64_t>();
  p.step = c["step"].get<uint32_t>();
  p.position = c["position"].get<uint32_t>();
  p.temperature = c["temperature"].get<float>();
  p.top_k = c["top_k"].get<int32_t>();
  p.top_p = c["top_p"].get<float>();
  p.cfg_scale = c["cfg_scale"].get<float>();
  p.uncond_row = 0;
  return p;
}

// The settings of a families.json generate case (scripts/reference_families.py).
inline GenerationSettings family_settings_of(const nlohmann::json& c) {
  GenerationSettings s;
  s.alg = c["loop"] == "llada" ? Algorithm::Llada : parse_algorithm(c["alg"].get<std::string>());
  s.gen_length = c["gen_length"].get<int>();
  s.steps = c["steps"].get<int>();
  if (!c["block_length"].is_null()) s.block_length = c["block_length"].get<int>();
  s.temperature = c["temperature"].get<float>();
  s.top_k = c["top_k"].get<int>();
  s.top_p = c["top_p"].get<float>();
  s.alg_temp = c["alg_temp"].get<float>();
  s.seed = c["seed"].get<uint64_t>();
  s.eos_stop = c["eos_stop"].get<bool>();
  return s;
}

inline GenerationSettings settings_of(const nlohmann::json& c) {
  GenerationSettings s;
  s.gen_length = c["gen_length"].get<int>();
  s.steps = c["steps"].get<int>();
  s.block_length = c["block_length"].get<int>();
  s.temperature = c["temperature"].get<float>();
  s.top_k = c["top_k"].get<int>();
  s.top_p = c["top_p"].get<float>();
  s.remasking = parse_remasking(c["remasking"].get<std::string>());
  s.cfg_scale = c["cfg_scale"].get<float>();
  if (!c["threshold"].is_null()) s.threshold = c["threshold"].get<float>();
  s.seed = c["seed"].get<uint64_t>();
  s.eos_stop = c["eos_stop"].get<bool>();
  return s;
}

// Samplers for every generate.json case of `model`, with the ids each must produce.
struct FixtureRequests {
  std::vector<std::unique_ptr<Sampler>> owned;
  std::vector<Sampler*> samplers;
  std::vector<std::vector<int32_t>> expected;
};

inline FixtureRequests fixture_requests(const nlohmann::json& cases, const std::string& model,
                                        const ModelConfig& config) {
  FixtureRequests r;
  for (const auto& c : cases) {
    if (c["model"] != model) continue;
    r.owned.push_back(std::make_unique<Sampler>(c["prompt_ids"].get<std::vector<int32_t>>(),
                                                settings_of(c), config));
    r.samplers.push_back(r.owned.back().get());
    r.expected.push_back(c["expected_ids"].get<std::vector<int32_t>>());
  }
  return r;
}

inline PickResult expected_pick(const nlohmann::json& e) {
  PickResult r;
  r.token = e["token"].get<int32_t>();
  r.prob = e["prob"].get<float>();
  r.margin = e["margin"].get<float>();
  r.entropy = e["entropy"].get<float>();
  return r;
}

// Same token exactly; the float statistics within 1e-5 relative.
inline void check_pick(const PickResult& got, const PickResult& want) {
  CHECK(got.token == want.token);
  CHECK(got.prob == doctest::Approx(want.prob).epsilon(1e-5));
  CHECK(got.margin == doctest::Approx(want.margin).epsilon(1e-5));
  CHECK(got.entropy == doctest::Approx(want.entropy).epsilon(1e-5));
}

}  // namespace unmask::test
