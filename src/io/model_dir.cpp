// Where the model directory is: the option, $UNMASK_MODEL, or the bundled model.
#include "io/model_dir.h"

#include <cstdlib>
#include <filesystem>
#include <vector>

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

}  // namespace unmask
