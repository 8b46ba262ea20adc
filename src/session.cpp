// Model-directory resolution and loading (config -> tensors -> tokenizer -> backend -> model).
#include "session.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "common.h"

namespace unmask {
namespace fs = std::filesystem;

namespace {
fs::path executable_dir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : exe.parent_path();
}

bool is_model_dir(const fs::path& dir) {
  std::error_code ec;
  return fs::exists(dir / "config.json", ec);
}
}  // namespace

std::string resolve_model_dir(const std::string& option) {
  if (!option.empty()) return option;
  if (const char* env = std::getenv("UNMASK_MODEL"); env && *env) return env;
  const fs::path exe = executable_dir();
  std::vector<fs::path> candidates;
  if (!exe.empty()) {
    candidates.push_back(exe / "models");                       // next to the binary
    candidates.push_back(exe.parent_path() / "models");         // build/ inside the source tree
    candidates.push_back(exe.parent_path() / "share/unmask/models");  // <prefix>/bin -> <prefix>/share
  }
  candidates.push_back(fs::path(UNMASK_INSTALL_DATADIR) / "models");
  candidates.push_back(fs::path(UNMASK_SOURCE_DIR) / "models");
  for (const fs::path& dir : candidates)
    if (is_model_dir(dir)) return dir.string();
  fail_input("no model given and the bundled model was not found; pass -m DIR or set UNMASK_MODEL");
}

std::unique_ptr<Session> open_session(const std::string& model_dir, const std::string& backend,
                                      int threads) {
  const auto t0 = std::chrono::steady_clock::now();
  auto s = std::make_unique<Session>();
  s->model_dir = model_dir;
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) fail_input(model_dir + ": not a model directory");
  s->config = load_config((fs::path(model_dir) / "config.json").string());
  s->store.emplace(TensorStore::open_dir(model_dir));
  s->weights = bind_weights(*s->store, s->config);
  s->tokenizer = load_tokenizer(model_dir);
  if (s->tokenizer->vocab_size() > s->config.vocab_size)
    fail_input(model_dir + ": tokenizer has " + std::to_string(s->tokenizer->vocab_size()) +
               " pieces but config.json vocab_size is " + std::to_string(s->config.vocab_size));
  s->backend = make_backend(backend, threads);
  s->model = std::make_unique<Model>(*s->backend, s->config, s->weights);
  s->load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

}  // namespace unmask
