// Entry point of the GPU tests: without a usable CUDA device every case reports "skipped" to
// ctest (exit 77, the SKIP_RETURN_CODE of the gpu label) instead of passing without running.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <string>

#include "cuda/cuda_backend.h"

int main(int argc, char** argv) {
  // Listing the cases (ctest's discovery at build time) and --help work on any machine.
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (a.find("list") != std::string::npos || a == "-ltc" || a == "-lts" || a == "-lr" || a == "-h" ||
        a == "--help" || a == "-?" || a == "-v" || a == "--version")
      return doctest::Context(argc, argv).run();
  }
  std::string why;
  if (!unmask::cuda_device_usable(&why)) {
    std::printf("skipped: no usable CUDA device (%s)\n", why.c_str());
    return 77;
  }
  return doctest::Context(argc, argv).run();
}
