// The build's choices: the default configuration compiles the CUDA backend only where an NVIDIA
// driver is present; -DUNMASK_CUDA=NVCC (the test command, CI) wherever nvcc exists.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "model/backend.h"

namespace fs = std::filesystem;

namespace {
// Configures the source tree into a scratch directory; returns cmake's output.
std::string configure(const std::string& extra) {
  const fs::path dir = fs::temp_directory_path() / ("unmask_configure_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const std::string log = dir.string() + ".log";
  const std::string cmd = "cmake -S " + std::string(UNMASK_SOURCE_ROOT) + " -B " + dir.string() +
                          " -DUNMASK_TESTS=OFF " + extra + " > " + log + " 2>&1";
  const int status = std::system(cmd.c_str());
  std::ifstream in(log);
  std::string out((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  fs::remove_all(dir);
  fs::remove(log);
  CHECK_MESSAGE(status == 0, out);
  return out;
}
}  // namespace

TEST_CASE("build: CUDA is compiled by default only with a driver, and with NVCC wherever nvcc exists") {
  const bool nvcc = fs::exists("/usr/local/cuda/bin/nvcc");
  const bool driver = unmask::nvidia_driver_present();
  const std::string by_default = configure("");
  CHECK(by_default.find(std::string("unmask: CUDA backend ") + (nvcc && driver ? "ON" : "OFF")) != std::string::npos);
  if (nvcc && !driver) CHECK(by_default.find("no NVIDIA driver found") != std::string::npos);
  const std::string with_nvcc = configure("-DUNMASK_CUDA=NVCC");
  CHECK(with_nvcc.find(std::string("unmask: CUDA backend ") + (nvcc ? "ON" : "OFF")) != std::string::npos);
  CHECK(configure("-DUNMASK_CUDA=OFF").find("unmask: CUDA backend OFF") != std::string::npos);
}
