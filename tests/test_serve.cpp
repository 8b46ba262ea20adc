// unmask serve over real loopback sockets: OpenAI shapes, streaming, batching invariance,
// disconnects, a full queue, bad requests, the API key, loading and shutdown.
#include <doctest/doctest.h>
#include <httplib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <pty.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <future>
#include <regex>
#include <thread>

#include "cli/serve_http.h"
#include "decode/session.h"
#include "fixtures.h"

namespace unmask {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

ServeOptions test_options() {
  ServeOptions o;
  o.port = 0;
  o.common.quiet = true;
  o.alias = "test-model";
  return o;
}

// A server on an ephemeral loopback port, in this process.
struct LiveServer {
  ApiServer server;
  int port;
  explicit LiveServer(ServeOptions o = test_options(), const std::string& model = UNMASK_MODELS_DIR,
                      bool load = true)
      : server(o), port(server.bind()) {
    server.start();
    if (load) server.load(open_session(model, "cpu", 1));
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120, 0);
    return c;
  }
  // POST a JSON body; the status and the parsed answer (null when it is not JSON).
  std::pair<int, json> post(const std::string& path, const std::string& body,
                            const httplib::Headers& headers = {}) const {
    auto res = client().Post(path.c_str(), headers, body, "application/json");
    REQUIRE(res);
    return {res->status, json::parse(res->body, nullptr, false)};
  }
  std::string metrics() const {
    auto res = client().Get("/metrics");
    REQUIRE(res);
    return res->body;
  }
  // The value of one unlabelled metric.
  double metric(const std::string& name) const {
    const std::string text = metrics();
    std::smatch m;
    REQUIRE(std::regex_search(text, m, std::regex("\n" + name + " ([0-9.e+-]+)\n")));
    return std::stod(m[1]);
  }
  // Polls until `name` reaches `value` (at most 20 s).
  bool wait_metric(const std::string& name, double value) const {
    for (int i = 0; i < 400; i++) {
      if (metric(name) == value) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }
};

// A raw connection that sends one request and can be dropped without reading the answer.
struct RawRequest {
  int fd = -1;
  RawRequest(int port, const std::string& body, const std::string& path = "/v1/completions") {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a = {};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    const std::string req = "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                            "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    REQUIRE(::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
  }
  std::string read_some() {
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  }
  void drop() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  ~RawRequest() { drop(); }
};

// The events of a server-sent-event body: the payload of each "data: " line.
std::vector<std::string> sse_events(const std::string& body) {
  std::vector<std::string> out;
  size_t at = 0;
  while ((at = body.find("data: ", at)) != std::string::npos) {
    const size_t end = body.find("\n\n", at);
    out.push_back(body.substr(at + 6, end - at - 6));
    at = end;
  }
  return out;
}

// A long request on the bundled model: hundreds of steps, so it is still running when the test
// acts on it.
const std::string kLong = R"({"prompt": "And God said", "max_tokens": 448, "steps": 448})";

}  // namespace

TEST_CASE("serve: a completion equals unmask generate with the same settings and seed") {
  LiveServer s;
  for (const auto& [fields, options] : std::vector<std::pair<std::string, std::string>>{
           {R"("max_tokens": 32)", "--gen-length 32"},
           {R"("max_tokens": 48, "temperature": 0.8, "seed": 7)", "--gen-length 48 --temperature 0.8 --seed 7"},
           {R"("max_tokens": 64, "steps": 32, "threshold": 0.9)", "--gen-length 64 --steps 32 --threshold 0.9"}}) {
    CAPTURE(options);
    const auto [status, j] = s.post("/v1/completions", R"({"model": "x", "prompt": "And God said", )" + fields + "}");
    REQUIRE(status == 200);
    const test::CommandResult cli = test::run_unmask("--backend cpu --format json -q " + options + " 'And God said'");
    REQUIRE(cli.exit_code == 0);
    const json want = json::parse(cli.out);
    CHECK(j["object"] == "text_completion");
    CHECK(j["model"] == "test-model");
    CHECK(j["choices"][0]["text"] == want["text"]);
    CHECK(j["usage"]["prompt_tokens"] == want["prompt_ids"].size());
    CHECK(j["usage"]["completion_tokens"] == want["stats"]["generated_tokens"]);
    CHECK(j["usage"]["total_tokens"] == j["usage"]["prompt_tokens"].get<int>() + j["usage"]["completion_tokens"].get<int>());
    CHECK(j["unmask"]["settings"] == want["settings"]);
    const std::string reason = j["choices"][0]["finish_reason"];
    CHECK((reason == "stop" || reason == "length"));
  }
}

TEST_CASE("serve: max_tokens is rounded up to whole blocks for the canvas and caps the text") {
  LiveServer s;
  // The bundled model decodes in blocks of 16: 20 tokens need a canvas of 32.
  const auto [status, j] = s.post("/v1/completions", R"({"prompt": "And God said", "max_tokens": 20, "stop": []})");
  REQUIRE(status == 200);
  CHECK(j["usage"]["gen_length"] == 32);
  CHECK(j["usage"]["completion_tokens"].get<int>() <= 20);
  const test::CommandResult cli = test::run_unmask("--backend cpu --format json -q --gen-length 32 'And God said'");
  const json want = json::parse(cli.out);
  const std::string full = want["text"];
  const std::string text = j["choices"][0]["text"];
  CHECK(!text.empty());
  CHECK(full.compare(0, text.size(), text) == 0);
  CHECK(text.size() < full.size());
  CHECK(j["choices"][0]["finish_reason"] == "length");
}

TEST_CASE("serve: stop strings cut the text and end the request early") {
  LiveServer s;
  const auto [s1, plain] = s.post("/v1/completions", R"({"prompt": "And God said", "max_tokens": 64})");
  REQUIRE(s1 == 200);
  const std::string text = plain["choices"][0]["text"];
  const std::string stop = "LORD";
  const size_t at = text.find(stop);
  REQUIRE(at != std::string::npos);
  const auto [s2, cut] = s.post("/v1/completions", R"({"prompt": "And God said", "max_tokens": 64, "stop": ["LORD", "zzz"]})");
  REQUIRE(s2 == 200);
  CHECK(cut["choices"][0]["text"] == text.substr(0, at));
  CHECK(cut["choices"][0]["finish_reason"] == "stop");
  CHECK(cut["unmask"]["steps"].get<int>() < plain["unmask"]["steps"].get<int>());
}

TEST_CASE("serve: streamed chunks concatenate to the plain text, never retract, and end with [DONE]") {
  LiveServer s;
  for (const std::string fields : {R"("max_tokens": 64)", R"("max_tokens": 64, "temperature": 0.9, "seed": 3)",
                                   R"("max_tokens": 48, "alg": "entropy")", R"("max_tokens": 64, "stop": "unto")"}) {
    CAPTURE(fields);
    const auto [status, plain] = s.post("/v1/completions", R"({"prompt": "In the beginning", )" + fields + "}");
    REQUIRE(status == 200);
    auto res = s.client().Post("/v1/completions",
                               R"({"prompt": "In the beginning", "stream": true, "stream_options": {"include_usage": true}, )" +
                                   fields + "}",
                               "application/json");
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(res->get_header_value("Content-Type").rfind("text/event-stream", 0) == 0);
    const std::vector<std::string> events = sse_events(res->body);
    REQUIRE(events.size() >= 3);
    CHECK(events.back() == "[DONE]");
    std::string text;
    std::string reason;
    json usage;
    for (size_t i = 0; i + 1 < events.size(); i++) {
      const json c = json::parse(events[i]);
      CHECK(c["object"] == "text_completion");
      if (c.contains("usage")) {
        usage = c["usage"];
        CHECK(c["choices"].empty());
        continue;
      }
      const json& choice = c["choices"][0];
      if (!choice["finish_reason"].is_null()) reason = choice["finish_reason"];
      else CHECK(!choice["text"].get<std::string>().empty());  // no empty chunks mid-stream
      text += choice["text"].get<std::string>();
    }
    CHECK(text == plain["choices"][0]["text"]);
    CHECK(reason == plain["choices"][0]["finish_reason"]);
    CHECK(usage == plain["usage"]);
  }
}

TEST_CASE("serve: chat completions use the model's template; a model without one answers 400") {
  LiveServer chat_server(test_options(), test::fixture("tiny-llada-bpe"));
  const std::string body =
      R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}], "max_tokens": 32})";
  const auto [status, j] = chat_server.post("/v1/chat/completions", body);
  REQUIRE(status == 200);
  CHECK(j["object"] == "chat.completion");
  CHECK(j["choices"][0]["message"]["role"] == "assistant");
  const test::CommandResult cli = test::run_unmask("--backend cpu --format json -q -m " + test::fixture("tiny-llada-bpe") +
                                                   " --chat --system 'Be brief.' --gen-length 32 'hello there'");
  REQUIRE(cli.exit_code == 0);
  CHECK(j["choices"][0]["message"]["content"] == json::parse(cli.out)["text"]);
  // Content as an array of text parts reads the same.
  const auto [s2, parts] = chat_server.post(
      "/v1/chat/completions",
      R"({"messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]}], "max_tokens": 32})");
  REQUIRE(s2 == 200);
  CHECK(parts["choices"][0]["message"]["content"] == j["choices"][0]["message"]["content"]);
  // Streamed: the role first, then content deltas that add up to the same text.
  auto res = chat_server.client().Post("/v1/chat/completions", body.substr(0, body.size() - 1) + R"(, "stream": true})",
                                       "application/json");
  REQUIRE(res);
  const std::vector<std::string> events = sse_events(res->body);
  REQUIRE(events.size() >= 3);
  CHECK(json::parse(events[0])["choices"][0]["delta"]["role"] == "assistant");
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); i++) {
    const json c = json::parse(events[i]);
    CHECK(c["object"] == "chat.completion.chunk");
    text += c["choices"][0]["delta"].value("content", "");
  }
  CHECK(text == j["choices"][0]["message"]["content"]);

  LiveServer plain;  // the bundled model has no chat template
  const auto [s3, err] = plain.post("/v1/chat/completions", R"({"messages": [{"role": "user", "content": "hi"}]})");
  CHECK(s3 == 400);
  CHECK(err["error"]["param"] == "messages");
  CHECK(err["error"]["message"].get<std::string>().find("chat template") != std::string::npos);
}

TEST_CASE("serve: 16 concurrent requests with mixed settings equal the same requests run one at a time") {
  ServeOptions o = test_options();
  o.max_batch = 6;  // fewer slots than requests: some wait in the queue and join mid-run
  LiveServer s(o);
  const std::vector<std::string> prompts = {"And God said", "In the beginning", "The LORD is my shepherd",
                                            "Blessed is the man"};
  const std::vector<std::string> settings = {
      R"("max_tokens": 32)",
      R"("max_tokens": 64, "temperature": 0.7, "seed": 11)",
      R"("max_tokens": 48, "steps": 24, "threshold": 0.8)",
      R"("max_tokens": 64, "stop": ["LORD"])",
      R"("max_tokens": 32, "cfg_scale": 1.5)",
      R"("max_tokens": 64, "cache": "prefix")",
      R"("max_tokens": 32, "alg": "entropy")",
      R"("max_tokens": 16, "top_k": 5, "temperature": 1.0, "seed": 5)"};
  std::vector<std::string> bodies;
  for (int i = 0; i < 16; i++)
    bodies.push_back(R"({"prompt": ")" + prompts[i % prompts.size()] + R"(", )" + settings[i % settings.size()] + "}");
  std::vector<json> alone;
  for (const std::string& b : bodies) {
    const auto [status, j] = s.post("/v1/completions", b);
    REQUIRE(status == 200);
    alone.push_back(j);
  }
  std::vector<std::future<std::pair<int, json>>> futures;
  for (const std::string& b : bodies)
    futures.push_back(std::async(std::launch::async, [&s, b] { return s.post("/v1/completions", b); }));
  for (size_t i = 0; i < bodies.size(); i++) {
    const auto [status, j] = futures[i].get();
    CAPTURE(bodies[i]);
    INFO(j.dump());
    REQUIRE(status == 200);
    CHECK(j["choices"][0]["text"] == alone[i]["choices"][0]["text"]);
    CHECK(j["choices"][0]["finish_reason"] == alone[i]["choices"][0]["finish_reason"]);
    CHECK(j["usage"] == alone[i]["usage"]);
  }
  // The requests did share steps: more than one request per step on average.
  CHECK(s.metric("unmask_step_requests_total") > s.metric("unmask_step_seconds_count"));
}

TEST_CASE("serve: a KV-cached request keeps its result when others join it mid-run") {
  for (const std::string cache : {"dual", "prefix"}) {
    CAPTURE(cache);
    LiveServer s;  // fresh: the first request sizes the cache, the ones joining grow it
    const std::string cached = R"({"prompt": "The LORD is my shepherd", "max_tokens": 64, "steps": 64, "cache": ")" +
                               cache + R"("})";
    const test::CommandResult cli = test::run_unmask("--backend cpu --format json -q --gen-length 64 --cache " +
                                                     cache + " 'The LORD is my shepherd'");
    REQUIRE(cli.exit_code == 0);
    auto first = std::async(std::launch::async, [&s, cached] { return s.post("/v1/completions", cached); });
    REQUIRE(s.wait_metric("unmask_requests_running", 1));
    std::vector<std::future<std::pair<int, json>>> joining;
    for (const std::string body : {R"({"prompt": "And God said, Let there be light", "max_tokens": 64})",
                                   R"({"prompt": "In the beginning", "max_tokens": 48, "cache": "prefix"})"})
      joining.push_back(std::async(std::launch::async, [&s, body] { return s.post("/v1/completions", body); }));
    const auto [status, j] = first.get();
    REQUIRE(status == 200);
    CHECK(j["choices"][0]["text"] == json::parse(cli.out)["text"]);
    for (auto& f : joining) CHECK(f.get().first == 200);
  }
}

TEST_CASE("serve: a client that disconnects frees its batch slot at the next step") {
  ServeOptions o = test_options();
  o.max_batch = 1;
  LiveServer s(o);
  for (const bool stream : {false, true}) {
    CAPTURE(stream);
    const double before = s.metric("unmask_requests_cancelled_total");
    {
      RawRequest r(s.port, stream ? R"({"prompt": "And God said", "max_tokens": 448, "steps": 448, "stream": true})" : kLong);
      REQUIRE(s.wait_metric("unmask_requests_running", 1));
      if (stream) CHECK(r.read_some().find("200 OK") != std::string::npos);
      r.drop();
      REQUIRE(s.wait_metric("unmask_requests_running", 0));
    }
    CHECK(s.metric("unmask_requests_cancelled_total") == before + 1);
    // The only slot is free again: a short request runs at once.
    const auto [status, j] = s.post("/v1/completions", R"({"prompt": "And God said", "max_tokens": 16})");
    CHECK(status == 200);
    CHECK(j["choices"][0]["text"].get<std::string>().size() > 0);
  }
}

TEST_CASE("serve: a full queue answers 429 at once, and the server recovers") {
  ServeOptions o = test_options();
  o.max_batch = 1;
  o.max_queue = 1;
  LiveServer s(o);
  RawRequest running(s.port, kLong);
  REQUIRE(s.wait_metric("unmask_requests_running", 1));
  RawRequest queued(s.port, kLong);
  REQUIRE(s.wait_metric("unmask_queue_depth", 1));
  const auto t0 = std::chrono::steady_clock::now();
  auto res = s.client().Post("/v1/completions", R"({"prompt": "hi", "max_tokens": 16})", "application/json");
  REQUIRE(res);
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
  CHECK(res->status == 429);
  CHECK(res->get_header_value("Retry-After") == "1");
  CHECK(json::parse(res->body)["error"]["code"] == "queue_full");
  running.drop();
  queued.drop();
  REQUIRE(s.wait_metric("unmask_requests_running", 0));
  REQUIRE(s.wait_metric("unmask_queue_depth", 0));
  CHECK(s.post("/v1/completions", R"({"prompt": "hi", "max_tokens": 16})").first == 200);
}

TEST_CASE("serve: bad requests get a 400 with OpenAI's error object naming the field") {
  ServeOptions o = test_options();
  o.max_body_bytes = 4096;
  LiveServer s(o);
  struct Bad {
    std::string body, param, says;
  };
  const std::vector<Bad> cases = {
      {"{\"prompt\": \"x\"", "", "not valid JSON"},
      {"[1, 2]", "", "JSON object"},
      {R"({"max_tokens": 16})", "prompt", "missing 'prompt'"},
      {R"({"prompt": ""})", "prompt", "empty"},
      {R"({"prompt": 5})", "prompt", "must be a string"},
      {R"({"prompt": ["a", "b"]})", "prompt", "one prompt"},
      {R"({"prompt": "x", "max_tokens": "ten"})", "max_tokens", "an integer"},
      {R"({"prompt": "x", "max_tokens": 0})", "max_tokens", "[1, "},
      {R"({"prompt": "x", "temperature": -1})", "temperature", "temperature"},
      {R"({"prompt": "x", "temperature": 1e300})", "temperature", "finite"},
      {R"({"prompt": "x", "top_p": 0})", "top_p", "top_p"},
      {R"({"prompt": "x", "seed": -3})", "seed", "non-negative"},
      {R"({"prompt": "x", "stream": "yes"})", "stream", "true or false"},
      {R"({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]})", "stop", "at most 4"},
      {R"({"prompt": "x", "stop": [""]})", "stop", "empty"},
      {R"({"prompt": "x", "n": 2})", "n", "must be 1"},
      {R"({"prompt": "x", "logprobs": 3})", "logprobs", "not supported"},
      {R"({"prompt": "x", "echo": true})", "echo", "not supported"},
      {R"({"prompt": "x", "remasking": "sideways"})", "remasking", "unknown strategy"},
      {R"({"prompt": "x", "max_tokens": 64, "steps": 7})", "steps", "not divisible"},
      {R"({"prompt": "x", "max_tokens": 4000})", "max_tokens", "'max_tokens' 4000"},
      {R"({"prompt": "x", "block_length": 10, "max_tokens": 16, "steps": 15})", "steps", "divisible"},
      {R"({"prompt": "x", "max_tokens": 4, "block_length": 0})", "block_length", "[1, "},
      {R"({"prompt": "x", "temperature": 1e400})", "", "not valid JSON"},
      {R"({"prompt": "x", "alg": ""})", "alg", "empty"},
      {R"({"prompt": "x", "tools": [{"type": "function"}]})", "tools", "not supported"},
      {R"({"prompt": ")" + std::string(3000, 'a') + R"(", "max_tokens": 16})", "max_tokens", "max_sequence_length"},
  };
  for (const Bad& b : cases) {
    CAPTURE(b.body);
    const auto [status, j] = s.post("/v1/completions", b.body);
    CHECK(status == 400);
    REQUIRE(j.contains("error"));
    CHECK(j["error"]["type"] == "invalid_request_error");
    CHECK(j["error"]["param"] == (b.param.empty() ? json(nullptr) : json(b.param)));
    CHECK(j["error"]["message"].get<std::string>().find(b.says) != std::string::npos);
  }
  // An oversized body: 400 with the limit named.
  const auto [big_status, big] = s.post("/v1/completions", R"({"prompt": ")" + std::string(8000, 'a') + "\"}");
  CHECK(big_status == 400);
  CHECK(big["error"]["message"].get<std::string>().find("--max-body") != std::string::npos);
  // Unknown fields are ignored, neutral values of unsupported features accepted.
  const auto [ok, j] = s.post("/v1/completions",
                              R"({"prompt": "x", "max_tokens": 16, "frobnicate": {"a": 1}, "n": 1, "logprobs": null, "presence_penalty": 0, "user": "u"})");
  CHECK(ok == 200);
  CHECK(j["choices"][0].contains("text"));
  // No such route: 404 in the same shape.
  auto res = s.client().Get("/v2/nothing");
  REQUIRE(res);
  CHECK(res->status == 404);
  CHECK(json::parse(res->body)["error"]["code"] == "not_found");
}

TEST_CASE("serve: the API key is required on every route but /health") {
  ServeOptions o = test_options();
  o.api_key = "sekrit-123";
  LiveServer s(o);
  const std::string body = R"({"prompt": "x", "max_tokens": 16})";
  auto [none, e1] = s.post("/v1/completions", body);
  CHECK(none == 401);
  CHECK(e1["error"]["code"] == "invalid_api_key");
  CHECK(e1["error"]["message"].get<std::string>().find("Authorization") != std::string::npos);
  CHECK(s.post("/v1/completions", body, {{"Authorization", "Bearer sekrit-12"}}).first == 401);
  CHECK(s.post("/v1/completions", body, {{"Authorization", "sekrit-123"}}).first == 401);
  CHECK(s.post("/v1/completions", body, {{"Authorization", "Bearer sekrit-123"}}).first == 200);
  CHECK(s.post("/v1/completions", body, {{"Authorization", "bearer sekrit-123"}}).first == 200);
  auto denied = s.client().Get("/v1/models");
  CHECK(denied->get_header_value("WWW-Authenticate") == "Bearer");
  auto models = s.client().Get("/v1/models");
  CHECK(models->status == 401);
  auto metrics = s.client().Get("/metrics");
  CHECK(metrics->status == 401);
  auto health = s.client().Get("/health");
  CHECK(health->status == 200);
}

TEST_CASE("serve: 503 while the model loads, then health, models and metrics") {
  LiveServer s(test_options(), UNMASK_MODELS_DIR, /*load=*/false);
  auto health = s.client().Get("/health");
  REQUIRE(health);
  CHECK(health->status == 503);
  CHECK(json::parse(health->body)["status"] == "loading");
  const auto [status, j] = s.post("/v1/completions", R"({"prompt": "x"})");
  CHECK(status == 503);
  CHECK(j["error"]["code"] == "model_not_loaded");
  s.server.load(open_session(UNMASK_MODELS_DIR, "cpu", 1));
  CHECK(s.client().Get("/health")->status == 200);
  const json models = json::parse(s.client().Get("/v1/models")->body);
  CHECK(models["object"] == "list");
  CHECK(models["data"][0]["id"] == "test-model");
  CHECK(json::parse(s.client().Get("/v1/models/test-model")->body) == models["data"][0]);
  CHECK(s.client().Get("/v1/models/other")->status == 404);
  CHECK(s.post("/v1/completions", R"({"prompt": "x", "max_tokens": 16})").first == 200);
  const std::string m = s.metrics();
  CHECK(m.find("unmask_requests_total{endpoint=\"/v1/completions\",code=\"503\"} 1") != std::string::npos);
  CHECK(m.find("unmask_requests_total{endpoint=\"/v1/completions\",code=\"200\"} 1") != std::string::npos);
  CHECK(m.find("# TYPE unmask_step_seconds histogram") != std::string::npos);
  CHECK(m.find("unmask_step_seconds_bucket{le=\"+Inf\"}") != std::string::npos);
  CHECK(s.metric("unmask_completion_tokens_total") > 0);
  CHECK(s.metric("unmask_prompt_tokens_total") > 0);
}

TEST_CASE("serve: shutdown under load answers every request within the grace period") {
  ServeOptions o = test_options();
  o.max_batch = 2;
  o.shutdown_grace_seconds = 0.5;
  LiveServer s(o);
  std::vector<std::future<std::pair<int, json>>> futures;
  for (int i = 0; i < 4; i++)
    futures.push_back(std::async(std::launch::async, [&s] { return s.post("/v1/completions", kLong); }));
  futures.push_back(std::async(std::launch::async,
                               [&s] { return s.post("/v1/completions", R"({"prompt": "x", "max_tokens": 16})"); }));
  REQUIRE(s.wait_metric("unmask_requests_running", 2));
  const auto t0 = std::chrono::steady_clock::now();
  const int ended = s.server.shutdown();
  CHECK(std::chrono::steady_clock::now() - t0 < 8s);
  CHECK(ended >= 2);  // the long ones cannot finish in half a second
  int ok = 0, unavailable = 0;
  for (auto& f : futures) {
    const auto [status, j] = f.get();
    if (status == 200) ok++;
    if (status == 503) {
      unavailable++;
      CHECK(j["error"]["code"] == "server_shutting_down");
    }
  }
  CHECK(ok + unavailable == 5);
  CHECK(unavailable >= 2);
  // The port no longer accepts.
  httplib::Client c("127.0.0.1", s.port);
  c.set_connection_timeout(1, 0);
  CHECK(!c.Get("/health"));
}

TEST_CASE("serve: the unmask serve process prints its port, and SIGTERM ends it with exit 0") {
  test::TempDir dir("serve");
  const std::string err = dir / "stderr";
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    execl(UNMASK_BINARY, UNMASK_BINARY, "serve", "--port", "0", "--backend", "cpu", "--threads", "1",
          "--shutdown-grace", "1", static_cast<char*>(nullptr));
    _exit(127);
  }
  int port = -1;
  std::string log;
  for (int i = 0; i < 400 && port < 0; i++) {
    std::this_thread::sleep_for(50ms);
    std::ifstream in(err);
    log.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    std::smatch m;
    if (std::regex_search(log, m, std::regex("listening on http://127\\.0\\.0\\.1:([0-9]+)")) &&
        log.find("ready:") != std::string::npos)
      port = std::stoi(m[1]);
  }
  REQUIRE(port > 0);
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
  auto res = c.Post("/v1/completions", R"({"prompt": "And God said", "max_tokens": 16})", "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  auto running = std::async(std::launch::async, [port] {
    httplib::Client c2("127.0.0.1", port);
    c2.set_read_timeout(60, 0);
    auto r = c2.Post("/v1/completions", kLong, "application/json");
    return r ? r->status : -1;
  });
  std::this_thread::sleep_for(300ms);
  const auto t0 = std::chrono::steady_clock::now();
  kill(pid, SIGTERM);
  int status = 0;
  pid_t done = 0;
  while ((done = waitpid(pid, &status, WNOHANG)) == 0 && std::chrono::steady_clock::now() - t0 < 15s)
    std::this_thread::sleep_for(50ms);
  if (done == 0) kill(pid, SIGKILL), waitpid(pid, &status, 0);
  REQUIRE(done == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  const int code = running.get();
  CHECK((code == 200 || code == 503));
  std::ifstream in(err);
  log.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  CHECK(log.find("shutting down") != std::string::npos);
}

TEST_CASE("serve: a taken port is refused, never shared") {
  LiveServer first;
  const test::CommandResult second = test::run_unmask("serve --port " + std::to_string(first.port));
  CHECK(second.exit_code == 2);
  CHECK(second.err.find("cannot listen") != std::string::npos);
}

TEST_CASE("serve: options are checked before anything loads, the defaults once the model is there") {
  const test::CommandResult taken = test::run_unmask("serve --port 70000");
  CHECK(taken.exit_code == 2);
  CHECK(taken.err.find("--port") != std::string::npos);
  const test::CommandResult steps = test::run_unmask("serve --port 0 --steps 3");
  CHECK(steps.exit_code == 2);
  CHECK(steps.err.find("--steps 3 is not divisible") != std::string::npos);
  CHECK(test::run_unmask("serve --api-key ''").exit_code == 2);
  CHECK(test::run_unmask("serve --shutdown-grace nan").exit_code == 2);
  const test::CommandResult format = test::run_unmask("serve --format json");
  CHECK(format.exit_code == 2);
  const test::CommandResult grace = test::run_unmask("serve --shutdown-grace -1");
  CHECK(grace.exit_code == 2);
  const test::CommandResult help = test::run_unmask("serve --help");
  CHECK(help.exit_code == 0);
  for (const char* option : {"--host", "--port", "--max-batch", "--max-queue", "--api-key", "--max-body",
                             "--shutdown-grace", "--steps", "--temperature"})
    CHECK(help.out.find(option) != std::string::npos);
}

TEST_CASE("generate --stream prints the plain run's text; with --format json or --visual it is refused") {
  for (const std::string options : {"", "--temperature 0.8 --seed 4", "--alg entropy --gen-length 48"}) {
    CAPTURE(options);
    const test::CommandResult plain = test::run_unmask("--backend cpu -q " + options + " 'And God said'");
    const test::CommandResult streamed = test::run_unmask("--backend cpu -q --stream " + options + " 'And God said'");
    REQUIRE(plain.exit_code == 0);
    REQUIRE(streamed.exit_code == 0);
    CHECK(streamed.out == plain.out);
  }
  const test::CommandResult json_out = test::run_unmask("--stream --format json 'And God said'");
  CHECK(json_out.exit_code == 2);
  CHECK(json_out.err.find("--stream") != std::string::npos);
  const test::CommandResult visual = test::run_unmask("--stream --visual 'And God said'");
  CHECK(visual.exit_code == 2);
  CHECK(test::run_unmask("--stream --no-stream 'And God said'").exit_code == 2);
}

TEST_CASE("generate streams by default on a terminal, and prints the same text as through a pipe") {
  const test::CommandResult piped = test::run_unmask("--backend cpu -q 'And God said'");
  REQUIRE(piped.exit_code == 0);
  const test::CommandResult tty = test::run_unmask_on_tty({"--backend", "cpu", "-q", "And God said"});
  CHECK(tty.exit_code == 0);
  const std::string& out = tty.out;
  // The terminal turns "\n" into "\r\n".
  std::string expected = piped.out;
  expected.replace(expected.size() - 1, 1, "\r\n");
  CHECK(out == expected);
}

}  // namespace unmask
