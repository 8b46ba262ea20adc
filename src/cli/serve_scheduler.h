// The server's engine thread: every request joins one ragged batch at the next step and leaves
// it when its text is final (continuous batching), with a bounded queue in front.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cli/serve_metrics.h"
#include "cli/serve_request.h"
#include "decode/engine.h"
#include "decode/text_stream.h"

namespace unmask {

// One request's life in the scheduler. The handler thread creates it, submits it and waits on
// it; the engine thread runs it. Fields below `request` are guarded by the scheduler's mutex.
struct ServeJob {
  explicit ServeJob(ServeRequest r) : request(std::move(r)) {}
  const ServeRequest request;

  std::string pending;   // released text the handler has not taken yet
  std::string text;      // everything released
  bool finished = false;
  FinishReason reason = FinishReason::None;
  ApiError error{0, "", "", ""};  // status 0: none
  int completion_tokens = 0;
  int steps = 0, forwards = 0;
  bool stopped_early = false;
  int masks_left = 0;
  std::vector<int32_t> ids;            // the answer's ids, all of gen_length (masks where unrun)
  std::vector<int32_t> filled_prompt;  // the prompt with its mask positions as filled
  std::string filled_prompt_text;      // its text, when the prompt held masks
  double queue_seconds = 0, run_seconds = 0;
  std::chrono::steady_clock::time_point submitted;
};

class ServeScheduler {
 public:
  // Starts the engine thread over `session`'s model. `max_batch`: requests run together;
  // `max_queue`: requests waiting beyond them.
  ServeScheduler(Session& session, int max_batch, int max_queue, ServeMetrics& metrics);
  ~ServeScheduler();  // cancels what is left and joins the engine thread

  enum class Admission { Accepted, QueueFull, Closed };
  Admission submit(const std::shared_ptr<ServeJob>& job);

  // Waits until the job has text pending or is finished, at most `timeout`; moves the pending
  // text into `delta`. Returns whether the job is finished (its result fields are then final).
  bool wait(ServeJob& job, std::string& delta, std::chrono::milliseconds timeout);
  // The client left: the job leaves the batch at the next step, or the queue at once.
  void cancel(const std::shared_ptr<ServeJob>& job);

  // Stops admitting (submit answers Closed), lets queued and running requests finish for at most
  // `grace`, then ends the rest with a 503 error. Returns the number ended that way.
  int drain(std::chrono::milliseconds grace);

 private:
  struct Running {
    std::shared_ptr<ServeJob> job;
    std::unique_ptr<Sampler> sampler;
    std::unique_ptr<TextStream> stream;
    std::chrono::steady_clock::time_point start;
  };
  void loop();
  void admit();                         // under mutex_: queue -> batch while slots are free
  // Whether `job` can join the batch as the KV cache slots are: 0 yes, > 0 after the slots grow
  // to that many rows, -1 not until the running requests that hold cached slots are done.
  int32_t cache_rows_for(const ServeJob& job) const;
  void after_step(bool failed, const std::string& why);  // under mutex_
  void finish(Running& r);              // under mutex_: result fields from the sampler
  void end_with_error(ServeJob& job, int status, const std::string& message, const std::string& code);

  Session& session_;
  Engine engine_;
  const int max_batch_, max_queue_;
  ServeMetrics& metrics_;

  std::mutex mutex_;
  std::condition_variable work_cv_;  // engine thread: a job arrived, or stop
  std::condition_variable done_cv_;  // handlers: text released or a job finished
  std::deque<std::shared_ptr<ServeJob>> queue_;
  std::vector<Running> running_;
  std::vector<std::shared_ptr<ServeJob>> cancelled_;  // to drop at the next step
  bool closed_ = false, stop_ = false;
  std::thread thread_;
};

}  // namespace unmask
