// GenerationSettings of a generate.json fixture case, shared by the CPU and GPU test binaries.
#pragma once

#include <nlohmann/json.hpp>

#include "sampler.h"

namespace unmask::test {

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

}  // namespace unmask::test
