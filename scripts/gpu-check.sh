#!/usr/bin/env bash
# GPU check for a lent machine: build for sm_90, run the GPU tests, time generation, print a table.
#
#   scripts/gpu-check.sh               on the GPU machine, from anywhere in the repo (< 6 minutes)
#   scripts/gpu-check.sh --fetch-deps  here, before: downloads the build dependencies as .deb files
#                                      into .gpu-deps/ (ignore it in .git/info/exclude, then name
#                                      it in the device run's `carry`), for a machine without them
#
# Environment: BUILD (build dir, default build-gpu), DEPS (default .gpu-deps), OUT (logs go there
# when set), ARCH (default 90), BENCH_ARGS (extra `unmask bench` options).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${BUILD:-build-gpu}
DEPS=${DEPS:-.gpu-deps}
ARCH=${ARCH:-90}
LOGS=${OUT:-/tmp/unmask-gpu-check}
mkdir -p "$LOGS"
export PATH=/usr/local/cuda/bin:$PATH
DEB_PACKAGES="libcli11-dev nlohmann-json3-dev doctest-dev libsentencepiece-dev libsentencepiece0
  libopenblas-dev libopenblas0 libopenblas-pthread-dev libopenblas0-pthread libgfortran5
  pkgconf pkgconf-bin libpkgconf3"

if [[ "${1:-}" == "--fetch-deps" ]]; then
  mkdir -p "$DEPS"
  # shellcheck disable=SC2086
  (cd "$DEPS" && apt-get download $DEB_PACKAGES)
  du -sh "$DEPS"
  echo "now: echo /$DEPS/ >> .git/info/exclude; and carry [\"$DEPS\"] in the device run"
  exit 0
fi

START=$(date +%s)
SUMMARY=()
note() { echo "== $*" >&2; SUMMARY+=("$*"); }
elapsed() { echo $(( $(date +%s) - START ))s; }

echo "== device" >&2
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 || true
nvcc --version | tail -1

# --- configure: the machine's own packages first, else the carried .deb files -----------------
CMAKE_ARGS=(-DUNMASK_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DCMAKE_BUILD_TYPE=Release)
configure() { timeout 120 cmake -S "$ROOT" -B "$BUILD" "${CMAKE_ARGS[@]}" "$@" > "$LOGS/configure.log" 2>&1; }
CONFIGURED=0
configure && CONFIGURED=1
if [[ $CONFIGURED == 0 ]] && grep -q '"CUDA20"' "$LOGS/configure.log"; then
  # note: CMake < 3.26 has no C++20 flag for nvcc; the CUDA sources need only C++17.
  CMAKE_ARGS+=(-DCMAKE_CUDA_STANDARD=17)
  rm -rf "$BUILD"
  note "configure: CMake $(cmake --version | head -1 | awk '{print $3}') lacks CUDA20, using CUDA17"
  configure && CONFIGURED=1
fi
if [[ $CONFIGURED == 0 ]]; then
  if ! compgen -G "$DEPS/*.deb" > /dev/null; then
    tail -30 "$LOGS/configure.log"
    echo "configure failed and no $DEPS/*.deb to fall back on (run: $0 --fetch-deps here)" >&2
    exit 1
  fi
  # note: dpkg -x into a private prefix, never into /, so the machine's own files stay intact.
  PREFIX=/tmp/unmask-deps
  rm -rf "$PREFIX" && mkdir -p "$PREFIX"
  for deb in "$DEPS"/*.deb; do dpkg -x "$deb" "$PREFIX"; done
  LIB=$PREFIX/usr/lib/x86_64-linux-gnu
  export PATH=$PREFIX/usr/bin:$PATH
  export PKG_CONFIG_LIBDIR=$LIB/pkgconfig:$LIB/openblas-pthread/pkgconfig:$PREFIX/usr/share/pkgconfig
  export PKG_CONFIG_SYSROOT_DIR=$PREFIX
  export LD_LIBRARY_PATH=$LIB:$LIB/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  rm -rf "$BUILD"
  if ! configure -DCMAKE_PREFIX_PATH="$PREFIX/usr" -DPKG_CONFIG_EXECUTABLE="$PREFIX/usr/bin/pkgconf"; then
    tail -30 "$LOGS/configure.log"
    exit 1
  fi
  note "dependencies: from $DEPS (extracted to $PREFIX)"
fi
grep -q "CUDA backend ON" "$LOGS/configure.log" || { tail -30 "$LOGS/configure.log"; exit 1; }

# --- build --------------------------------------------------------------------------------------
if ! timeout 240 cmake --build "$BUILD" -j"$(nproc)" > "$LOGS/build.log" 2>&1; then
  grep -E "error|Error" "$LOGS/build.log" | head -40
  tail -20 "$LOGS/build.log"
  exit 1
fi
note "build: ok at $(elapsed)"

# --- GPU tests ----------------------------------------------------------------------------------
TESTS_OK=1
if ! timeout 150 ctest --test-dir "$BUILD" -L gpu --output-on-failure > "$LOGS/ctest-gpu.log" 2>&1; then
  TESTS_OK=0
fi
grep -vE "^\s*(Start|$)" "$LOGS/ctest-gpu.log" | tail -40 || true
# The per-case messages (skips, device, warnings) from the test binary itself.
timeout 120 "$BUILD/tests/unmask_gpu_tests" > "$LOGS/gpu-tests.log" 2>&1 || true
grep -E "MESSAGE|WARNING|skipped|device:|test cases" "$LOGS/gpu-tests.log" | head -20 || true
note "gpu tests: $(grep -E 'tests passed' "$LOGS/ctest-gpu.log" | tail -1 || echo 'no summary') at $(elapsed)"

# --- timing -------------------------------------------------------------------------------------
UNMASK=$BUILD/unmask
BENCH_OK=0
if "$UNMASK" bench --help > /dev/null 2>&1; then
  # shellcheck disable=SC2086
  # Canvases of 64, 256 and 1024 positions (16 prompt + answer), one block each, 16 steps.
  if timeout 150 "$UNMASK" bench --backend cuda --synthetic llada-8b --prompt-length 16 \
       --gen-length 48,240,1008 --steps 16 --batch-size 1 --warmup 1 --repeat 2 --baseline \
       ${BENCH_ARGS:-} > "$LOGS/bench.txt" 2> "$LOGS/bench.err" &&
     timeout 60 "$UNMASK" bench --backend cuda --synthetic llada-8b --prompt-length 16 \
       --gen-length 48 --steps 16 --batch-size 8 --warmup 1 --repeat 2 \
       >> "$LOGS/bench.txt" 2>> "$LOGS/bench.err" &&
     timeout 60 "$UNMASK" bench --backend cuda --gen-length 64 --batch-size 1,8 --repeat 2 \
       >> "$LOGS/bench.txt" 2>> "$LOGS/bench.err"; then  # the bundled model
    BENCH_OK=1
    # Dream's loop on Dream-7B's shape (GQA 28/4, q/k/v biases, shifted logits), canvas 256.
    timeout 60 "$UNMASK" bench --backend cuda --synthetic dream-7b --prompt-length 16 \
      --gen-length 240 --steps 16 --warmup 1 --repeat 2 >> "$LOGS/bench.txt" 2>> "$LOGS/bench.err" ||
      echo "dream-7b bench failed (see $LOGS/bench.err)" >> "$LOGS/bench.txt"
  else
    tail -5 "$LOGS/bench.err"
  fi
fi
if [[ $BENCH_OK == 0 ]]; then
  # Fallback: wall time of plain generations on the fixture model, CUDA against CPU.
  MODEL=$ROOT/tests/fixtures/tiny-f32-gqa
  {
    printf "%-8s %-12s %10s\n" backend model seconds
    for backend in cuda cpu; do
      t0=$(date +%s.%N)
      if timeout 60 "$UNMASK" --backend "$backend" -m "$MODEL" --gen-length 64 --steps 64 \
           --block-length 32 --quiet "In the beginning" > /dev/null 2>> "$LOGS/bench.err"; then
        printf "%-8s %-12s %10.2f\n" "$backend" tiny-f32-gqa "$(awk "BEGIN { print $(date +%s.%N) - $t0 }")"
      else
        printf "%-8s %-12s %10s\n" "$backend" tiny-f32-gqa failed
      fi
    done
  } > "$LOGS/bench.txt"
fi
note "timing: done at $(elapsed)"

echo
echo "== summary"
for line in "${SUMMARY[@]}"; do echo "$line"; done
echo
cat "$LOGS/bench.txt"
[[ $TESTS_OK == 1 ]] || { echo "GPU TESTS FAILED (log: $LOGS/ctest-gpu.log)"; exit 1; }
