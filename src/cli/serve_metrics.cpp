// ServeMetrics: counters under one mutex, written out as Prometheus text.
#include "cli/serve_metrics.h"

#include <cstdio>
#include <sstream>

namespace unmask {

void ServeMetrics::request_done(const std::string& endpoint, int status) {
  std::lock_guard lock(mutex_);
  requests_[{endpoint, status}]++;
}

void ServeMetrics::tokens(int64_t prompt, int64_t completion) {
  std::lock_guard lock(mutex_);
  prompt_tokens_ += prompt;
  completion_tokens_ += completion;
}

void ServeMetrics::cancelled() {
  std::lock_guard lock(mutex_);
  cancelled_++;
}

void ServeMetrics::step(double seconds, int requests) {
  std::lock_guard lock(mutex_);
  steps_++;
  step_requests_ += requests;
  step_seconds_ += seconds;
  for (size_t i = 0; i < kStepBuckets.size(); i++) {
    if (seconds <= kStepBuckets[i]) {
      step_buckets_[i]++;
      break;
    }
  }
}

void ServeMetrics::set_queue(int queued, int running, int max_batch) {
  std::lock_guard lock(mutex_);
  queued_ = queued;
  running_ = running;
  max_batch_ = max_batch;
}

std::string ServeMetrics::prometheus_text() const {
  std::lock_guard lock(mutex_);
  std::ostringstream o;
  auto header = [&](const char* name, const char* type, const char* help) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  };
  header("unmask_requests_total", "counter", "HTTP requests answered, by endpoint and status code.");
  for (const auto& [key, count] : requests_)
    o << "unmask_requests_total{endpoint=\"" << key.first << "\",code=\"" << key.second << "\"} " << count << "\n";
  // One unlabelled sample of a counter or gauge.
  auto sample = [&](const char* name, const char* type, const char* help, double value) {
    header(name, type, help);
    char text[64];
    std::snprintf(text, sizeof text, "%.15g", value);  // counters stay exact up to 10^15
    o << name << " " << text << "\n";
  };
  sample("unmask_prompt_tokens_total", "counter", "Prompt tokens of finished generations.", prompt_tokens_);
  sample("unmask_completion_tokens_total", "counter", "Completion tokens returned by finished generations.",
         completion_tokens_);
  sample("unmask_requests_cancelled_total", "counter", "Generations cancelled because the client left.", cancelled_);
  sample("unmask_queue_depth", "gauge", "Requests waiting for a batch slot.", queued_);
  sample("unmask_requests_running", "gauge", "Requests in the running batch.", running_);
  sample("unmask_batch_slots", "gauge", "Batch slots (--max-batch).", max_batch_);
  sample("unmask_batch_occupancy", "gauge",
         "Mean requests per engine step over batch slots, since start (1: every step full).",
         steps_ > 0 ? static_cast<double>(step_requests_) / static_cast<double>(steps_) / max_batch_ : 0.0);
  sample("unmask_step_requests_total", "counter", "Sum over engine steps of the requests each one ran.",
         static_cast<double>(step_requests_));
  char buf[64];
  header("unmask_step_seconds", "histogram", "Time of one engine step (forward and pick of the whole batch).");
  int64_t cumulative = 0;
  for (size_t i = 0; i < kStepBuckets.size(); i++) {
    cumulative += step_buckets_[i];
    std::snprintf(buf, sizeof buf, "%g", kStepBuckets[i]);
    o << "unmask_step_seconds_bucket{le=\"" << buf << "\"} " << cumulative << "\n";
  }
  o << "unmask_step_seconds_bucket{le=\"+Inf\"} " << steps_ << "\n";
  std::snprintf(buf, sizeof buf, "%.6f", step_seconds_);
  o << "unmask_step_seconds_sum " << buf << "\n";
  o << "unmask_step_seconds_count " << steps_ << "\n";
  return o.str();
}

}  // namespace unmask
