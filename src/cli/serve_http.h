// The HTTP front of `unmask serve`: OpenAI-compatible routes over one ServeScheduler.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "cli/options.h"
#include "cli/serve_metrics.h"
#include "cli/serve_scheduler.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace unmask {

struct ServeOptions {
  CommonOptions common;         // no --format
  GenerationOptions gen;        // defaults of every request
  std::string host = "127.0.0.1";
  int port = 8080;              // 0: any free port (printed)
  int max_batch = 0;            // 0: 8 on the CPU, 32 on CUDA
  int max_queue = 64;
  std::string api_key;          // empty: none (from --api-key or UNMASK_API_KEY)
  std::string alias;            // the model's name in /v1/models and responses; empty: the directory's
  size_t max_body_bytes = 1 << 20;
  double shutdown_grace_seconds = 10;  // how long Ctrl-C / SIGTERM lets running requests finish
};

// Lifecycle: bind() then start() (answers 503 while loading), load(session), then
// shutdown() from any thread. Routes: POST /v1/completions, POST /v1/chat/completions,
// GET /v1/models, GET /health, GET /metrics.
class ApiServer {
 public:
  explicit ApiServer(ServeOptions options);
  ~ApiServer();

  // Binds host:port; returns the port (the chosen one for port 0). fail_usage when it cannot.
  int bind();
  void start();                               // serves on a thread of its own
  void load(std::unique_ptr<Session> session); // the model is ready: requests run from now on
  // Stops accepting connections, lets running requests finish for the grace period, ends the rest
  // with 503, and joins every thread. Returns the number of requests ended early.
  int shutdown();

  ServeMetrics& metrics() { return metrics_; }
  const std::string& model_name() const { return model_name_; }

 private:
  void routes();
  void generate(const httplib::Request& req, httplib::Response& res, bool chat);

  ServeOptions o_;
  std::unique_ptr<httplib::Server> http_;
  std::thread listener_;
  ServeMetrics metrics_;
  std::unique_ptr<Session> session_;
  std::unique_ptr<ServeScheduler> scheduler_;
  std::atomic<int> state_{0};  // 0 loading, 1 ready, 2 shutting down
  std::string model_name_;
  std::atomic<uint64_t> next_id_{1};
  std::mutex shutdown_mutex_;
  int bound_port_ = -1;
  int listen_socket_ = -1;
};

// The default --max-batch: the CPU gains little past 8 requests (its GEMMs are compute-bound
// there); a GPU keeps gaining up to a few dozen.
int default_max_batch(const std::string& backend_name);

}  // namespace unmask
