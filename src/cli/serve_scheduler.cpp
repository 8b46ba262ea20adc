// ServeScheduler: one engine thread steps every running request together; handlers wait on it.
#include "cli/serve_scheduler.h"

#include <algorithm>

#include "cli/output.h"
#include "common.h"

namespace unmask {

using Clock = std::chrono::steady_clock;

ServeScheduler::ServeScheduler(Session& session, int max_batch, int max_queue, ServeMetrics& metrics)
    : session_(session), engine_(*session.model), max_batch_(max_batch), max_queue_(max_queue),
      metrics_(metrics) {
  metrics_.set_queue(0, 0, max_batch_);
  thread_ = std::thread([this] { loop(); });
}

ServeScheduler::~ServeScheduler() {
  drain(std::chrono::milliseconds(0));
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  work_cv_.notify_all();
  thread_.join();
}

ServeScheduler::Admission ServeScheduler::submit(const std::shared_ptr<ServeJob>& job) {
  {
    std::lock_guard lock(mutex_);
    if (closed_) return Admission::Closed;
    if (static_cast<int>(queue_.size() + running_.size()) >= max_batch_ + max_queue_)
      return Admission::QueueFull;
    job->submitted = Clock::now();
    queue_.push_back(job);
    metrics_.set_queue(static_cast<int>(queue_.size()), static_cast<int>(running_.size()), max_batch_);
  }
  work_cv_.notify_one();
  return Admission::Accepted;
}

bool ServeScheduler::wait(ServeJob& job, std::string& delta, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  done_cv_.wait_for(lock, timeout, [&] { return job.finished || !job.pending.empty(); });
  delta = std::move(job.pending);
  job.pending.clear();
  return job.finished;
}

void ServeScheduler::cancel(const std::shared_ptr<ServeJob>& job) {
  {
    std::lock_guard lock(mutex_);
    if (job->finished) return;
    metrics_.cancelled();
    auto it = std::find(queue_.begin(), queue_.end(), job);
    if (it != queue_.end()) {
      queue_.erase(it);
      end_with_error(*job, 499, "the client closed the connection", "cancelled");
      return;
    }
    cancelled_.push_back(job);
  }
  work_cv_.notify_one();
}

int ServeScheduler::drain(std::chrono::milliseconds grace) {
  std::unique_lock lock(mutex_);
  closed_ = true;
  done_cv_.wait_for(lock, grace, [&] { return queue_.empty() && running_.empty(); });
  int ended = 0;
  const std::string why = "the server is shutting down; the request did not finish in time";
  for (const auto& job : queue_) {
    end_with_error(*job, 503, why, "server_shutting_down");
    ended++;
  }
  queue_.clear();
  for (Running& r : running_) {
    if (r.job->finished) continue;
    end_with_error(*r.job, 503, why, "server_shutting_down");
    cancelled_.push_back(r.job);
    ended++;
  }
  lock.unlock();
  work_cv_.notify_all();
  done_cv_.notify_all();
  return ended;
}

void ServeScheduler::end_with_error(ServeJob& job, int status, const std::string& message,
                                    const std::string& code) {
  job.error = ApiError{status, message, "", code};
  job.finished = true;
}

int32_t ServeScheduler::cache_rows_for(const ServeJob& job) const {
  // note: once one request in the batch uses the KV cache, the engine gives every request of
  // the batch a slot, so every canvas must fit one.
  auto canvas = [](const ServeRequest& q) {
    return static_cast<int32_t>(canvas_length(q.prompt_ids.size(), q.settings));
  };
  bool any_cache = job.request.settings.cache != CacheMode::None;
  bool slots_live = false;
  int32_t need = canvas(job.request);
  for (const Running& r : running_) {
    const bool cached = r.job->request.settings.cache != CacheMode::None;
    any_cache = any_cache || cached;
    slots_live = slots_live || cached;
    need = std::max(need, canvas(r.job->request));
  }
  if (!any_cache || need <= engine_.cache_slot_rows()) return 0;
  // Larger slots for everyone: only while no running request holds cached keys and values.
  return slots_live ? -1 : need;
}

void ServeScheduler::admit() {
  // Strict arrival order: a request that must wait for larger KV cache slots holds back the ones
  // behind it, so none waits forever.
  while (static_cast<int>(running_.size()) < max_batch_ && !queue_.empty()) {
    const int32_t rows = cache_rows_for(*queue_.front());
    if (rows < 0) break;
    std::shared_ptr<ServeJob> job = queue_.front();
    queue_.pop_front();
    const ServeRequest& q = job->request;
    try {
      if (rows > 0) engine_.resize_cache_slots(rows);
      Running r;
      r.job = job;
      r.sampler = std::make_unique<Sampler>(q.prompt_ids, q.settings, session_.config);
      r.stream = std::make_unique<TextStream>(*session_.tokenizer, session_.config.stop_token_ids,
                                              session_.config.mask_token_id, false, q.stop, q.max_tokens);
      r.start = Clock::now();
      job->queue_seconds = std::chrono::duration<double>(r.start - job->submitted).count();
      running_.push_back(std::move(r));
    } catch (const std::exception& e) {
      end_with_error(*job, 500, e.what(), "");
    }
  }
}

void ServeScheduler::finish(Running& r) {
  ServeJob& job = *r.job;
  const Sampler& s = *r.sampler;
  job.reason = r.stream->reason();
  job.completion_tokens = r.stream->tokens();
  job.steps = s.steps_done();
  job.forwards = s.forwards();
  job.stopped_early = s.stopped_early() || !s.done();
  job.masks_left = s.masks_left();
  job.ids = s.answer();
  job.filled_prompt = s.filled_prompt();
  if (s.prompt_masks() > 0) job.filled_prompt_text = filled_prompt_text(session_, s, false);
  job.run_seconds = std::chrono::duration<double>(Clock::now() - r.start).count();
  job.finished = true;
  metrics_.tokens(static_cast<int64_t>(job.request.prompt_ids.size()), job.completion_tokens);
}

void ServeScheduler::after_step(bool failed, const std::string& why) {
  for (size_t i = 0; i < running_.size();) {
    Running& r = running_[i];
    ServeJob& job = *r.job;
    bool leaves = job.finished;  // ended by drain()
    if (!leaves && failed) {
      end_with_error(job, 500, "the engine failed: " + why, "");
      leaves = true;
    }
    if (!leaves) {
      const Sampler& s = *r.sampler;
      const std::string delta = r.stream->advance(s.filled_prompt(), s.final_answer(), s.done());
      job.pending += delta;
      job.text += delta;
      if (s.done() && !s.error().empty()) {
        end_with_error(job, 500, s.error(), "generation_failed");
        leaves = true;
      } else if (s.done() || r.stream->ended()) {
        // Text that is final needs no more steps: a stop string or max_tokens inside the stable
        // prefix ends the request before its canvas is full.
        finish(r);
        leaves = true;
      }
    }
    if (leaves) {
      running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      i++;
    }
  }
}

void ServeScheduler::loop() {
  std::vector<Sampler*> active;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      for (const auto& job : cancelled_)
        std::erase_if(running_, [&](const Running& r) { return r.job == job; });
      cancelled_.clear();
      admit();
      metrics_.set_queue(static_cast<int>(queue_.size()), static_cast<int>(running_.size()), max_batch_);
      if (running_.empty()) {
        done_cv_.notify_all();
        if (stop_) return;
        work_cv_.wait(lock, [&] { return stop_ || !queue_.empty() || !cancelled_.empty(); });
        continue;
      }
      active.clear();
      for (Running& r : running_) active.push_back(r.sampler.get());
    }
    // The batch changes only here, between steps, so no lock is held through the forward.
    const auto t0 = Clock::now();
    bool failed = false;
    std::string why;
    try {
      engine_.step(active);
    } catch (const std::exception& e) {
      failed = true;
      why = e.what();
    }
    engine_.forget_forward_times();
    metrics_.step(std::chrono::duration<double>(Clock::now() - t0).count(), static_cast<int>(active.size()));
    {
      std::lock_guard lock(mutex_);
      after_step(failed, why);
    }
    done_cv_.notify_all();
  }
}

}  // namespace unmask
