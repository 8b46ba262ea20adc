// Times the CPU pick on 152,064-wide rows (Dream-7B's vocabulary): both confidence modes, with
// and without top-p, at temperature 0.2. Not a test; built on request:
//   cmake --build build --target unmask_pick_speed && build/tests/unmask_pick_speed
// The checksum covers every token and probability, so runs of two builds compare exactly.
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "model/cpu_backend.h"

int main() {
  using namespace unmask;
  const int64_t vocab = 152064;
  const int rows = 64;
  std::mt19937 gen(1);
  std::normal_distribution<float> logit(0.f, 3.f);
  std::vector<std::vector<float>> data(rows, std::vector<float>(vocab));
  for (auto& row : data)
    for (float& x : row) x = logit(gen);
  std::vector<int32_t> scratch;
  const std::vector<int32_t> banned = {151666};
  for (bool dream : {false, true}) {
    for (float top_p : {1.f, 0.95f}) {
      PickParams p;
      p.temperature = 0.2f;
      p.top_p = top_p;
      p.filtered_confidence = dream;
      double checksum = 0;
      std::vector<float> work;
      const auto t0 = std::chrono::steady_clock::now();
      for (int r = 0; r < rows; r++) {
        work = data[r];  // pick_row bans in place
        p.position = static_cast<uint32_t>(r);
        const PickResult res = pick_row(work.data(), nullptr, vocab, p, banned, scratch);
        checksum += res.token + res.prob;
      }
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      std::printf("%-5s top_p %.2f: %7.3f ms/row  (checksum %.6f)\n", dream ? "dream" : "llada",
                  top_p, ms / rows, checksum);
    }
  }
}
