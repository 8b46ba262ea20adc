// The server's counters, rendered in Prometheus' text exposition format for GET /metrics.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace unmask {

// Thread-safe: handler threads count requests, the engine thread counts steps.
class ServeMetrics {
 public:
  // Upper bounds (seconds) of the step-time histogram's buckets; +Inf follows.
  static constexpr std::array<double, 12> kStepBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                          0.1,   0.25,   0.5,   1,    2.5,   5};

  void request_done(const std::string& endpoint, int status);  // one HTTP answer
  void tokens(int64_t prompt, int64_t completion);             // a finished generation
  void cancelled();                                            // a client left mid-request
  // One engine step: `seconds` of forward and pick for `requests` requests in the batch.
  void step(double seconds, int requests);
  void set_queue(int queued, int running, int max_batch);

  std::string prometheus_text() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, int64_t> requests_;  // (endpoint, status) -> count
  int64_t prompt_tokens_ = 0, completion_tokens_ = 0, cancelled_ = 0;
  int64_t steps_ = 0, step_requests_ = 0;
  std::array<int64_t, kStepBuckets.size()> step_buckets_{};  // per bucket, not cumulative
  double step_seconds_ = 0;
  int queued_ = 0, running_ = 0, max_batch_ = 1;
};

}  // namespace unmask
