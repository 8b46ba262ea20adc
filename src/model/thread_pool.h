// A fixed team of worker threads for the CPU backend's parallel loops.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace unmask {

// Runs one parallel loop at a time; the calling thread takes part as thread 0.
//
// Waiting: a worker with nothing to do spins for a short while (kSpin) and then sleeps in the
// kernel (a futex, through std::atomic::wait), so an idle pool costs no CPU; OpenMP's libgomp
// fixes its wait policy when it is loaded, which is why unmask once re-executed itself to pass
// OMP_WAIT_POLICY=PASSIVE. The short spin keeps back-to-back loops of a forward pass (about 80
// per step) from paying a wake-up each, and bounds what a busy machine loses to spinning.
//
// Busy machines: when another process holds a core, a worker can be descheduled in the middle of
// a task and the caller waits a time slice (milliseconds) for it. The pool therefore measures,
// for each loop, how long the caller waited for the workers after finishing its own tasks; when
// that is a large share of the loop's time on average, it runs the next kSoloLoops loops on the
// caller alone and then tries the workers again. So the default thread count is never much
// slower than one thread, and regains the second core when it comes free.
class ThreadPool {
 public:
  // threads >= 1: threads - 1 workers are started now and joined by the destructor.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  // Loops run on the caller alone because the workers were late (for tests and stats).
  int64_t solo_loops() const { return solo_loops_total_; }

  // Calls fn(task, thread) once for every task in [0, n_tasks), on min(max_threads, size(),
  // n_tasks) threads with `thread` in [0, that count); tasks are handed out in order, one at a
  // time. Returns when every task has finished; the first exception a task threw is rethrown
  // here (tasks not yet started are skipped). Not reentrant: fn must not call run.
  void run(int64_t n_tasks, int max_threads, const std::function<void(int64_t, int)>& fn);

 private:
  void worker_loop(int thread);
  void work(int thread);

  std::vector<std::thread> workers_;
  // The current loop; written by run() before `generation_` is bumped, read by the workers.
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t n_tasks_ = 0;
  int active_threads_ = 0;
  std::atomic<int64_t> next_task_{0};
  std::atomic<uint64_t> generation_{0};  // bumped once per loop; workers wait on it
  std::atomic<int> busy_{0};             // workers still inside the current loop
  std::atomic<bool> stop_{false};
  std::mutex error_mutex_;
  std::exception_ptr error_;
  // The late-worker rule (see the class comment).
  double late_share_ = 0.0;   // moving average of wait / (work + wait) per threaded loop
  int solo_left_ = 0;         // loops still to run on the caller alone
  int64_t solo_loops_total_ = 0;
};

}  // namespace unmask
