// OpenBLAS, loaded on first use with the kernels the CPU can run and a single thread.
#pragma once

#include <string>

namespace unmask {

// cblas_sgemm's signature (row-major only here): C[m,n] = alpha * op(A) * op(B) + beta * C.
// trans_a / trans_b: false for N, true for T; lda/ldb/ldc in elements.
using SgemmFn = void (*)(bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                         const float* a, int lda, const float* b, int ldb, float beta, float* c,
                         int ldc);

// The loaded library. OpenBLAS picks its kernels and starts its threads when it is loaded, from
// OPENBLAS_CORETYPE and OPENBLAS_NUM_THREADS; unmask sets both first, unless the user did:
//   - the core type from the CPU's features (Cooperlake/SkylakeX for AVX-512, Haswell for
//     AVX2+FMA, SandyBridge for AVX), because Debian's OpenBLAS 0.3.21 falls back to its SSE3
//     "Prescott" kernels on CPUs it does not know (measured: 4x slower sgemm on an AVX-512 VM);
//   - one thread, because the CPU backend runs its own threads around single-threaded GEMMs.
// Throws Error (kExitRuntime) naming the library when libopenblas.so.0 cannot be loaded.
struct Blas {
  SgemmFn sgemm = nullptr;
  std::string description;  // e.g. "OpenBLAS 0.3.21, Cooperlake kernels (chosen by unmask)"
};
const Blas& blas();

// The OPENBLAS_CORETYPE that suits this CPU ("" when OpenBLAS's own choice is as good).
std::string openblas_coretype_for_cpu();

}  // namespace unmask
