// ThreadPool: spin briefly, then sleep on a futex; dynamic hand-out of tasks.
#include "model/thread_pool.h"

#include <chrono>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace unmask {
namespace {

// How long an idle thread polls before sleeping. Measured on 2 cores: a wake-up from sleep costs
// 10-50 us, a forward pass of the bundled model runs a loop every 0.1-1 ms.
constexpr auto kSpin = std::chrono::microseconds(50);
// The late-worker rule: above this average share of a loop spent waiting for late workers, the
// next kSoloLoops loops (a few forward passes) run on the caller alone.
constexpr double kLateShare = 0.3;
constexpr double kLateAverageWeight = 1.0 / 16;
constexpr int kSoloLoops = 500;

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

// Polls `done` for up to kSpin; true when it became true meanwhile.
template <typename Done>
bool spin_until(Done done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0;; i++) {
    if (done()) return true;
    cpu_relax();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > deadline) return false;
  }
}

}  // namespace

ThreadPool::ThreadPool(int threads) {
  for (int t = 1; t < threads; t++) workers_.emplace_back([this, t] { worker_loop(t); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (std::thread& w : workers_) w.join();
}

void ThreadPool::work(int thread) {
  for (;;) {
    const int64_t task = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (task >= n_tasks_) return;
    try {
      (*fn_)(task, thread);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex_);
      if (!error_) error_ = std::current_exception();
      next_task_.store(n_tasks_, std::memory_order_relaxed);  // skip what has not started
    }
  }
}

void ThreadPool::worker_loop(int thread) {
  uint64_t seen = 0;
  for (;;) {
    if (!spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; }))
      generation_.wait(seen, std::memory_order_acquire);
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    if (thread < active_threads_) work(thread);
    if (busy_.fetch_sub(1, std::memory_order_acq_rel) == 1) busy_.notify_one();
  }
}

void ThreadPool::run(int64_t n_tasks, int max_threads,
                     const std::function<void(int64_t, int)>& fn) {
  if (n_tasks <= 0) return;
  int threads = std::min<int64_t>({static_cast<int64_t>(max_threads), size(), n_tasks});
  if (threads < 1) threads = 1;
  if (threads > 1 && solo_left_ > 0) {
    solo_left_--;
    solo_loops_total_++;
    threads = 1;
  }
  fn_ = &fn;
  n_tasks_ = n_tasks;
  active_threads_ = threads;
  error_ = nullptr;
  next_task_.store(0, std::memory_order_relaxed);
  if (threads > 1) {
    // note: every worker wakes for every loop (the generation is shared), so `busy_` counts all
    // of them; workers past active_threads_ return at once.
    busy_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
  }
  const auto start = std::chrono::steady_clock::now();
  work(0);
  if (threads > 1) {
    const auto own_done = std::chrono::steady_clock::now();
    if (!spin_until([&] { return busy_.load(std::memory_order_acquire) == 0; })) {
      for (int left = busy_.load(std::memory_order_acquire); left != 0;
           left = busy_.load(std::memory_order_acquire))
        busy_.wait(left, std::memory_order_acquire);
    }
    const double worked = std::chrono::duration<double>(own_done - start).count();
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - own_done).count();
    const double share = waited / std::max(worked + waited, 1e-9);
    late_share_ += kLateAverageWeight * (share - late_share_);
    if (late_share_ > kLateShare) {
      solo_left_ = kSoloLoops;
      late_share_ = 0.0;
    }
  }
  fn_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

}  // namespace unmask
