// OpenBLAS through dlopen, so its kernel and thread choices can be made before it initialises.
#include "model/blas.h"

#include <cblas.h>
#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

#include "common.h"

namespace unmask {
namespace {

using CblasSgemm = void (*)(CBLAS_ORDER, CBLAS_TRANSPOSE, CBLAS_TRANSPOSE, blasint, blasint,
                            blasint, float, const float*, blasint, const float*, blasint, float,
                            float*, blasint);
using NameFn = char* (*)();

CblasSgemm g_cblas_sgemm = nullptr;

void sgemm_row_major(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a,
                     int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  g_cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

Blas load() {
  std::string chosen_by = "OpenBLAS's detection";
  if (const char* user = std::getenv("OPENBLAS_CORETYPE"); user && *user) {
    chosen_by = "OPENBLAS_CORETYPE";
  } else if (const std::string core = openblas_coretype_for_cpu(); !core.empty()) {
    setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
    chosen_by = "unmask, from the CPU's features";
  }
  // note: OpenBLAS's own pool would compete with the backend's threads (a step ran 20x slower
  // with two pools on two cores); a user who sets the variable keeps it.
  setenv("OPENBLAS_NUM_THREADS", "1", 0);

  void* lib = nullptr;
  std::string why;
  for (const char* name : {"libopenblas.so.0", "libopenblas.so"}) {
    lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib) break;
    if (why.empty()) why = dlerror();
  }
  if (!lib)
    fail_runtime("cannot load OpenBLAS (" + why +
                 "): the CPU backend needs it; install it (Debian: apt-get install libopenblas0)");
  g_cblas_sgemm = reinterpret_cast<CblasSgemm>(dlsym(lib, "cblas_sgemm"));
  if (!g_cblas_sgemm) fail_runtime("the loaded OpenBLAS has no cblas_sgemm");

  Blas b;
  b.sgemm = sgemm_row_major;
  b.description = "OpenBLAS";
  if (auto config = reinterpret_cast<NameFn>(dlsym(lib, "openblas_get_config"))) {
    // "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Cooperlake MAX_THREADS=64": keep the version.
    const std::string text = config();
    const size_t space = text.find(' ', text.find(' ') + 1);
    b.description = text.substr(0, space);
  }
  if (auto core = reinterpret_cast<NameFn>(dlsym(lib, "openblas_get_corename")))
    b.description += std::string(", ") + core() + " kernels (chosen by " + chosen_by + ")";
  return b;
}

}  // namespace

std::string openblas_coretype_for_cpu() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  // note: __builtin_cpu_supports checks that the OS saves the AVX/AVX-512 registers (XCR0), so a
  // kernel chosen here can run.
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512cd");
  if (avx512 && __builtin_cpu_supports("avx512bf16")) return "Cooperlake";
  if (avx512) return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  if (__builtin_cpu_supports("avx")) return "SandyBridge";
#endif
  return "";
}

const Blas& blas() {
  static std::once_flag once;
  static Blas loaded;
  std::call_once(once, [] { loaded = load(); });
  return loaded;
}

}  // namespace unmask
