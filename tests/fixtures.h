// Helpers shared by the tests: fixture paths, JSON loading, relative error, running the CLI.
#pragma once

#include <nlohmann/json.hpp>

#include <pty.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <sys/wait.h>
#include <vector>

#include "io/config.h"

namespace unmask::test {

inline std::string fixture(const std::string& name) {
  return std::string(UNMASK_FIXTURES_DIR) + "/" + name;
}

inline nlohmann::json load_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open fixture " + path);
  return nlohmann::json::parse(in);
}

// max |a - b| / max |b|: the error relative to the row's scale, robust to entries near zero.
inline double relative_error(const std::vector<float>& a, const std::vector<double>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < b.size(); i++) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

// A scratch directory for one test case, removed at its end.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag = "unmask") {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           (tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// A LLaDA-family config for sampler unit tests: vocabulary 10, mask 9, EOS 2, 64 positions.
inline ModelConfig small_llada_config() {
  ModelConfig c;
  c.family = "llada";
  c.vocab_size = c.embedding_size = 10;
  c.max_seq_len = 64;
  c.mask_token_id = 9;
  c.eos_token_id = 2;
  c.stop_token_ids = {2};
  return c;
}

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs the unmask binary with `args` (a shell fragment); stdin from `input` when not empty.
inline CommandResult run_unmask(const std::string& args, const std::string& input = "") {
  static int counter = 0;
  const std::string base = "/tmp/unmask_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
  // note: UNMASK_MODEL is cleared so tests see the documented default-model search.
  std::string cmd = "env -u UNMASK_MODEL " + std::string(UNMASK_BINARY) + " " + args;
  if (!input.empty()) {
    std::ofstream(base + ".in") << input;
    cmd += " < " + base + ".in";
  } else {
    cmd += " < /dev/null";
  }
  cmd += " > " + base + ".out 2> " + base + ".err";
  const int status = std::system(cmd.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  auto slurp = [](const std::string& path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  r.out = slurp(base + ".out");
  r.err = slurp(base + ".err");
  std::remove((base + ".in").c_str());
  std::remove((base + ".out").c_str());
  std::remove((base + ".err").c_str());
  return r;
}

// Runs the unmask binary with `args` on a pseudo-terminal (stdout and stderr a terminal, as in an
// interactive shell); `out` holds all it wrote, with the terminal's "\r\n" line ends. exit_code
// -1 when it did not exit normally or the terminal could not be made.
inline CommandResult run_unmask_on_tty(const std::vector<std::string>& args) {
  CommandResult r;
  int fd = -1;
  const pid_t pid = forkpty(&fd, nullptr, nullptr, nullptr);
  if (pid < 0) return r;
  if (pid == 0) {
    ::unsetenv("UNMASK_MODEL");  // as run_unmask: the documented default-model search
    std::vector<char*> argv{const_cast<char*>(UNMASK_BINARY)};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(UNMASK_BINARY, argv.data());
    _exit(127);
  }
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) r.out.append(buf, static_cast<size_t>(n));
  int status = 0;
  waitpid(pid, &status, 0);
  ::close(fd);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace unmask::test
