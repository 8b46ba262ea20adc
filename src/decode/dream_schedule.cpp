// Dream's timesteps and per-step transfer counts.
#include "decode/dream_schedule.h"

#include <cstddef>

namespace unmask {

std::vector<float> dream_timesteps(int steps, float eps) {
  // Every operation rounds to float32 as the reference's kernel does; volatile keeps the compiler
  // from fusing the multiply and add where the target has FMA.
  const volatile float step = (eps - 1.f) / static_cast<float>(steps);
  std::vector<float> t(static_cast<size_t>(steps) + 1);
  const int halfway = (steps + 1) / 2;
  for (int i = 0; i <= steps; i++) {
    const volatile float scaled = step * static_cast<float>(i < halfway ? i : steps - i);
    t[static_cast<size_t>(i)] = i < halfway ? 1.f + scaled : eps - scaled;
  }
  return t;
}

float dream_transfer_share(const std::vector<float>& t, int step) {
  const int steps = static_cast<int>(t.size()) - 1;
  if (step >= steps - 1) return 1.f;
  const volatile float ratio = t[static_cast<size_t>(step) + 1] / t[static_cast<size_t>(step)];
  return 1.f - ratio;
}

int dream_transfer_count(const std::vector<float>& t, int step, int masked) {
  const int steps = static_cast<int>(t.size()) - 1;
  if (step >= steps - 1) return masked;
  return static_cast<int>(static_cast<float>(masked) * dream_transfer_share(t, step));
}

}  // namespace unmask
