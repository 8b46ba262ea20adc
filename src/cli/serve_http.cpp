// ApiServer: cpp-httplib routes, API-key check, JSON and server-sent-event answers.
#include "cli/serve_http.h"

#include <httplib.h>
#include <strings.h>
#include <sys/socket.h>

#include <cstdio>
#include <ctime>
#include <iostream>
#include <set>

#include "cli/peer_socket.h"
#include "cli/serve_response.h"
#include "common.h"
#include "io/safetensors.h"  // printable()

namespace unmask {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kLoading = 0, kReady = 1, kStopping = 2;

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(api_error_json(e).dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_json(httplib::Response& res, const json& j) {
  res.status = 200;
  res.set_content(j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

std::string sse(const json& j) {
  return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

// Compares in time independent of where the strings differ, so a key cannot be guessed byte by
// byte from the answer's timing.
bool same_key(const std::string& given, const std::string& key) {
  if (given.size() != key.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < key.size(); i++) diff |= static_cast<unsigned char>(given[i] ^ key[i]);
  return diff == 0;
}

}  // namespace

int default_max_batch(const std::string& backend_name) { return backend_name == "cpu" ? 8 : 32; }

ApiServer::ApiServer(ServeOptions options) : o_(std::move(options)), http_(std::make_unique<httplib::Server>()) {
  model_name_ = o_.alias;
  // One handler thread per request that may be in the engine or its queue, plus a few for
  // /health and /metrics and the 429 answers of a full queue: a waiting request never holds up
  // another's admission.
  const int threads = (o_.max_batch > 0 ? o_.max_batch : 64) + o_.max_queue + 32;
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  http_->set_payload_max_length(o_.max_body_bytes);
  // note: an idle keep-alive connection holds a handler thread; 2 s bounds what idle clients can
  // hold and how long they delay a shutdown.
  http_->set_keep_alive_timeout(2);
  // SO_REUSEADDR only: the library's default also sets SO_REUSEPORT, with which a second server
  // on a taken port starts without a word and the kernel splits the clients between the two.
  http_->set_socket_options([this](int sock) {
    const int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    listen_socket_ = sock;
  });
  routes();
}

ApiServer::~ApiServer() { shutdown(); }

int ApiServer::bind() {
  bound_port_ = o_.port == 0 ? http_->bind_to_any_port(o_.host) : (http_->bind_to_port(o_.host, o_.port) ? o_.port : -1);
  // The library listens with a backlog of 5, which resets bursts of connections before they
  // could be answered (even with a 429); listening again on the bound socket raises it.
  if (bound_port_ >= 0 && listen_socket_ >= 0) ::listen(listen_socket_, SOMAXCONN);
  if (bound_port_ < 0)
    fail_usage("cannot listen on " + o_.host + ":" + std::to_string(o_.port) +
               " (the port is taken, or the address is not this machine's); choose another with --host / --port");
  return bound_port_;
}

void ApiServer::start() {
  listener_ = std::thread([this] { http_->listen_after_bind(); });
}

void ApiServer::load(std::unique_ptr<Session> session) {
  session_ = std::move(session);
  const int batch = o_.max_batch > 0 ? o_.max_batch : default_max_batch(session_->backend->name());
  scheduler_ = std::make_unique<ServeScheduler>(*session_, batch, o_.max_queue, metrics_);
  int expected = kLoading;
  state_.compare_exchange_strong(expected, kReady);
}

int ApiServer::shutdown() {
  std::lock_guard lock(shutdown_mutex_);
  if (!listener_.joinable()) return 0;
  state_ = kStopping;
  // New connections are refused from here; requests already admitted get the grace period.
  http_->stop();
  int ended = 0;
  if (scheduler_)
    ended = scheduler_->drain(std::chrono::milliseconds(static_cast<int64_t>(o_.shutdown_grace_seconds * 1000)));
  listener_.join();  // returns once every handler thread has answered
  scheduler_.reset();
  return ended;
}

void ApiServer::routes() {
  httplib::Server& s = *http_;
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (o_.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    // The scheme name is case-insensitive (RFC 9110); the key is not.
    const bool bearer = auth.size() > 7 && strncasecmp(auth.c_str(), "Bearer ", 7) == 0;
    if (bearer && same_key(auth.substr(7), o_.api_key)) return httplib::Server::HandlerResponse::Unhandled;
    res.set_header("WWW-Authenticate", "Bearer");
    send_error(res, ApiError{401,
                             auth.empty() ? "missing API key: send the header 'Authorization: Bearer KEY'"
                                          : "wrong API key",
                             "", "invalid_api_key"});
    return httplib::Server::HandlerResponse::Handled;
  });
  // Answers httplib gives on its own (no such route, body too large) get OpenAI's error object.
  s.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req,
                                                                  httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    if (res.status == 413) {
      res.status = 400;
      send_error(res, ApiError{400, "the request body is larger than the server's limit of " +
                                        std::to_string(o_.max_body_bytes) + " bytes (--max-body)", "", "request_too_large"});
    } else if (res.status == 404) {
      send_error(res, ApiError{404, "no such endpoint: " + req.method + " " + req.path +
                                        " (POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health, GET /metrics)",
                               "", "not_found"});
    } else {
      send_error(res, ApiError{res.status, "HTTP error " + std::to_string(res.status), "", ""});
    }
    return httplib::Server::HandlerResponse::Handled;
  }));
  // Counted before the status line is written, not in the logger (which runs after the body):
  // a client that reads /metrics right after its answer must find that answer counted.
  s.set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    // Known routes only: a label per path a client made up would grow the metrics without bound.
    static const std::set<std::string> kRoutes = {"/v1/completions", "/v1/chat/completions", "/v1/models",
                                                  "/health", "/metrics"};
    metrics_.request_done(kRoutes.count(req.path)                  ? req.path
                          : req.path.rfind("/v1/models/", 0) == 0 ? "/v1/models/{id}"
                                                                   : "other",
                          res.status);
  });
  s.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    // note: the path is the client's text: escaped, so it cannot forge log lines or send escape
    // codes to a terminal.
    if (!o_.common.quiet)
      std::fprintf(stderr, "unmask: %s %s %d (%zu bytes in, %s)\n", printable(req.method, 16).c_str(),
                   printable(req.path, 200).c_str(), res.status, req.body.size(), req.remote_addr.c_str());
  });

  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const int state = state_.load();
    json j;
    j["status"] = state == kReady ? "ok" : state == kLoading ? "loading" : "shutting down";
    j["model"] = model_name_;
    if (state == kReady) res.status = 200;
    else res.status = 503;
    res.set_content(j.dump(), "application/json");
  });
  const json model = {{"id", model_name_}, {"object", "model"}, {"created", 0}, {"owned_by", "unmask"}};
  s.Get("/v1/models", [model](const httplib::Request&, httplib::Response& res) {
    send_json(res, json{{"object", "list"}, {"data", json::array({model})}});
  });
  s.Get("/v1/models/(.+)", [this, model](const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1] == model_name_) return send_json(res, model);
    send_error(res, ApiError{404, "no model '" + printable(req.matches[1], 100) + "': this server has '" +
                                      model_name_ + "'", "model", "model_not_found"});
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_.prometheus_text(), "text/plain; version=0.0.4");
  });
  s.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { generate(req, res, false); });
  s.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) { generate(req, res, true); });
}

void ApiServer::generate(const httplib::Request& req, httplib::Response& res, bool chat) {
  const int state = state_.load();
  if (state != kReady) {
    send_error(res, ApiError{503, state == kLoading ? "the model is still loading; retry shortly (GET /health says when it is ready)"
                                                    : "the server is shutting down",
                             "", state == kLoading ? "model_not_loaded" : "server_shutting_down"});
    return;
  }
  std::shared_ptr<ServeJob> job;
  try {
    job = std::make_shared<ServeJob>(parse_serve_request(req.body, chat, *session_, o_.gen));
  } catch (const ApiError& e) {
    send_error(res, e);
    return;
  }
  switch (scheduler_->submit(job)) {
    case ServeScheduler::Admission::Accepted: break;
    case ServeScheduler::Admission::QueueFull:
      res.set_header("Retry-After", "1");
      send_error(res, ApiError{429, "the server is busy: its batch and queue are full (--max-batch, --max-queue); retry shortly",
                               "", "queue_full"});
      return;
    case ServeScheduler::Admission::Closed:
      send_error(res, ApiError{503, "the server is shutting down", "", "server_shutting_down"});
      return;
  }
  ResponseHead head;
  head.chat = chat;
  head.id = std::string(chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id_++);
  head.model = model_name_;
  head.created = static_cast<int64_t>(std::time(nullptr));
  // The connection's socket, to notice a client that leaves while its request runs.
  const int fd = find_connection_socket(req.local_port, req.remote_addr, req.remote_port);
  ServeScheduler* scheduler = scheduler_.get();

  if (!job->request.stream) {
    std::string delta;
    while (!scheduler->wait(*job, delta, std::chrono::milliseconds(50))) {
      if (fd >= 0 && peer_closed(fd)) {
        scheduler->cancel(job);
        res.status = 499;  // never sent: the client is gone
        return;
      }
    }
    if (job->error.status != 0) {
      send_error(res, job->error);
      return;
    }
    send_json(res, completion_json(head, *job));
    return;
  }

  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [job, scheduler, head, fd](size_t, httplib::DataSink& sink) {
        bool first = true;
        auto last_write = Clock::now();
        auto write = [&](const std::string& s) {
          last_write = Clock::now();
          return sink.write(s.data(), s.size());
        };
        for (;;) {
          std::string delta;
          const bool done = scheduler->wait(*job, delta, std::chrono::milliseconds(50));
          if (fd >= 0 && peer_closed(fd)) return false;
          if (first && head.chat) {
            // The role comes first, as OpenAI's streams send it.
            if (!write(sse(chunk_json(head, "", "", true)))) return false;
            first = false;
          }
          if (!delta.empty() && !write(sse(chunk_json(head, delta, "", first)))) return false;
          first = false;
          if (done) break;
          // A comment line now and then: a client that left is noticed by the failed write.
          if (Clock::now() - last_write > std::chrono::seconds(5) && !write(": keep-alive\n\n")) return false;
        }
        if (job->error.status != 0) {
          write(sse(api_error_json(job->error)));
        } else {
          json last = chunk_json(head, "", finish_reason_name(job->reason), false);
          last["unmask"] = unmask_stats_json(*job);
          if (!write(sse(last))) return false;
          // stream_options.include_usage: one more chunk, with no choices, as OpenAI sends it.
          if (job->request.include_usage) {
            json usage = chunk_json(head, "", "", false);
            usage["choices"] = json::array();
            usage["usage"] = usage_json(*job);
            if (!write(sse(usage))) return false;
          }
        }
        write("data: [DONE]\n\n");
        sink.done();
        return true;
      },
      [job, scheduler](bool success) {
        if (!success) scheduler->cancel(job);
      });
}

}  // namespace unmask
