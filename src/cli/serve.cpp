// unmask serve: options, the loader thread, and the signal wait that ends the server.
#include "cli/serve.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <thread>

#include "cli/option_checks.h"
#include "cli/output.h"
#include "common.h"
#include "decode/session.h"

namespace unmask {

CLI::App* add_serve_command(CLI::App& app, ServeOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "serve", "Serve the model over an OpenAI-compatible HTTP API (completions, chat, streaming)");
  add_common_options(*cmd, o.common, {});
  cmd->add_option("--host", o.host,
                  "Address to listen on; anything but loopback without an API key draws a warning")
      ->check(non_empty())
      ->capture_default_str();
  cmd->add_option("--port", o.port, "TCP port (0: any free port, printed on stderr)")
      ->transform(bounded(0, 65535))
      ->capture_default_str();
  cmd->add_option("--max-batch", o.max_batch,
                  "Requests generated together (0: 8 on the CPU, 32 on CUDA); more wait in the queue")
      ->transform(bounded(0, kMaxBatchSize, "each request in flight reserves its canvas' activations"))
      ->capture_default_str();
  cmd->add_option("--max-queue", o.max_queue,
                  "Requests waiting for a batch slot; beyond them the server answers 429")
      ->transform(bounded(0, 1024, "each waiting request holds a connection and a thread"))
      ->capture_default_str();
  cmd->add_option("--api-key", o.api_key,
                  "Require 'Authorization: Bearer KEY' on every route but /health (default: "
                  "$UNMASK_API_KEY; none when both are unset)")
      ->check(non_empty());
  cmd->add_option("--alias", o.alias,
                  "The model's name in /v1/models and responses (default: its directory's name)")
      ->check(non_empty());
  cmd->add_option("--max-body", o.max_body_bytes, "Largest request body in bytes; larger ones get a 400")
      ->transform(bounded(1024, 1 << 30))
      ->capture_default_str();
  cmd->add_option("--shutdown-grace", o.shutdown_grace_seconds,
                  "Seconds that Ctrl-C / SIGTERM lets running requests finish before ending them with 503")
      ->transform(decimal_number())
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  add_generation_options(*cmd, o.gen);
  return cmd;
}

namespace {

bool loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

}  // namespace

int run_serve(ServeOptions o) {
  if (!(std::isfinite(o.shutdown_grace_seconds) && o.shutdown_grace_seconds >= 0 && o.shutdown_grace_seconds <= 3600))
    fail_usage("--shutdown-grace must be a number of seconds in [0, 3600]");
  if (o.api_key.empty())
    if (const char* env = std::getenv("UNMASK_API_KEY")) {
      if (*env == '\0') fail_usage("UNMASK_API_KEY is set but empty; unset it for no key, or give a key");
      o.api_key = env;
    }
  const std::string model_dir = resolve_model_dir(o.common.model);
  if (o.alias.empty()) o.alias = std::filesystem::path(model_dir).filename().string();
  if (o.alias.empty()) o.alias = "unmask";
  // The server's own generation defaults must be valid before anyone asks for them.
  if (!loopback(o.host) && o.api_key.empty())
    std::cerr << "unmask: warning: listening on " << o.host
              << " without an API key: anyone who can reach this machine can use the model "
                 "(--api-key or UNMASK_API_KEY)\n";

  // Signals are taken by sigwait in this thread only: every thread started below inherits the
  // blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGUSR1);  // the loader thread: done
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  ApiServer server(o);
  const int port = server.bind();
  server.start();
  std::cerr << "unmask: listening on http://" << (o.host.find(':') != std::string::npos ? "[" + o.host + "]" : o.host)
            << ":" << port << " (loading " << model_dir << ")" << std::endl;

  std::unique_ptr<Session> session;
  std::exception_ptr load_error;
  const pthread_t main_thread = pthread_self();
  std::thread loader([&] {
    try {
      session = open_session(model_dir, o.common.backend, o.common.threads, o.common.mask_id);
      // The server's defaults are a request without fields: wrong ones are the operator's
      // mistake, said once at start (exit 2), never blamed on every client.
      validate_settings(resolve_settings(o.gen, session->config), 1, session->config);
    } catch (...) {
      load_error = std::current_exception();
    }
    pthread_kill(main_thread, SIGUSR1);
  });
  bool loaded = false;
  for (;;) {
    int sig = 0;
    sigwait(&signals, &sig);
    if (sig == SIGUSR1) {
      loader.join();
      loaded = true;
      if (load_error) {
        server.shutdown();
        std::rethrow_exception(load_error);
      }
      print_notes(session->notes, o.common.quiet);
      std::cerr << "unmask: ready: " << o.alias << " on " << session->backend->device() << std::endl;
      server.load(std::move(session));
      continue;
    }
    // A second Ctrl-C during the drain ends the process at once, as usual.
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    pthread_sigmask(SIG_UNBLOCK, &signals, nullptr);
    if (!loaded) {
      // The load cannot be interrupted from here; nothing has been served.
      std::cerr << "unmask: interrupted while loading the model" << std::endl;
      std::_Exit(kExitInterrupted);
    }
    std::cerr << "unmask: shutting down: no new requests; running ones get " << o.shutdown_grace_seconds
              << " s to finish (Ctrl-C again to stop at once)" << std::endl;
    const int ended = server.shutdown();
    std::cerr << "unmask: stopped" << (ended > 0 ? "; " + std::to_string(ended) + " request(s) ended with 503" : "")
              << std::endl;
    return kExitOk;
  }
}

}  // namespace unmask
