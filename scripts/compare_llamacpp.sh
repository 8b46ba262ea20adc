#!/usr/bin/env bash
# Peer comparison of unmask's CPU forward against llama.cpp's diffusion example
# (llama-diffusion-cli) on the same LLaDA weights at identical settings. Documented, not in CI.
#
# Needs:
#   - a llama.cpp checkout with a CPU build of the diffusion example, e.g.
#       cmake -S LLAMA_CPP_DIR -B LLAMA_CPP_DIR/build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
#             -DCMAKE_BUILD_TYPE=Release
#       cmake --build LLAMA_CPP_DIR/build -j --target llama-diffusion-cli [llama-tokenize]
#     (this script builds nothing; it runs LLAMA_CPP_DIR/build/bin/llama-diffusion-cli, and
#     llama-tokenize when it was built, to check the prompt's ids; it imports LLAMA_CPP_DIR/gguf-py
#     at run time; nothing of llama.cpp is copied here). Its version: `git rev-parse HEAD` when
#     LLAMA_CPP_DIR is a git checkout, else $LLAMA_CPP_COMMIT, else the binary's --version;
#   - a Python 3 with numpy and sentencepiece, plus gguf-py's own imports (numpy, pyyaml, tqdm,
#     requests): $PYTHON, else the first of python3, /usr/bin/python3 that has them (Debian:
#     python3-numpy python3-sentencepiece python3-yaml python3-tqdm python3-requests);
#   - unmask ($UNMASK, default build/unmask next to this script) and a LLaDA-format MODEL_DIR
#     with a sentencepiece tokenizer.model, e.g. the random d512 one:
#       scripts/make_random_llada.py scripts/bench-d512-8l.json /tmp/rand-d512
#
# Run (the baseline: 3 repeats at 2 and at 1 threads, canvases 128 and 256; llama.cpp
# 3f545beccee69d9975f466ec7e45fd9aacd8ba90 from a tarball, hence LLAMA_CPP_COMMIT):
#   scripts/make_random_llada.py scripts/bench-d512-8l.json /tmp/rand-d512
#   OPENBLAS_CORETYPE=SkylakeX LLAMA_CPP_COMMIT=3f545beccee69d9975f466ec7e45fd9aacd8ba90 \
#     scripts/compare_llamacpp.sh /tmp/llamacpp /tmp/rand-d512 --repeats 3 --threads 2,1 \
#     --canvas 128,256
#   (add --outtype f32 for the f32 GGUF, --no-parity to skip the parity runs). In general:
#   scripts/compare_llamacpp.sh LLAMA_CPP_DIR MODEL_DIR [--repeats N] [--threads T[,T...]]
#       [--canvas C[,C...]] [--outtype bf16|f32|f16] [--no-parity]
#   The environment reaches both tools unchanged (llama.cpp uses no BLAS). Debian's OpenBLAS
#   0.3.21 does not know some AVX-512 CPUs and falls back to SSE3 "Prescott" kernels; unmask
#   builds that do not choose the core themselves need OPENBLAS_CORETYPE=SkylakeX (or the
#   CPU's core) for a fair number. The OpenBLAS core is printed: from `unmask info` when it
#   reports one ("blas: ..."), else by loading the libopenblas that unmask links, in this
#   environment, and asking it.
#   Run it on an otherwise idle machine, with T at most the number of idle cores: ggml's
#   threads meet at spinning barriers after every op, so when one of them shares a core with
#   another busy process llama.cpp slows down several-fold (measured: 5-14x at 2 threads on 2
#   cores next to one busy process), far more than unmask does. The 1-minute load average is
#   printed before and after the timing runs.
#
# Baseline (2026-11-29; 2-core AVX-512 VM, idle; unmask built 23:48 with OpenBLAS 0.3.21
# SkylakeX kernels, weights widened to f32 at load; llama.cpp 3f545be, GGML_NATIVE, bf16 GGUF;
# random d512 8-layer model; ms per forward, median (min-max) of 3; ratio = llama.cpp/unmask):
#   threads canvas  unmask              llama.cpp           ratio
#   2       128     73.3 (62.1-77.8)    79.1 (77.7-83.8)    1.08
#   2       256     139.7 (127.1-146.4) 151.2 (150.3-163.6) 1.08
#   1       128     79.0 (78.7-90.6)    131.8 (130.7-132.9) 1.67
#   1       256     173.1 (160.9-179.0) 272.6 (269.9-275.6) 1.58
#   f32 GGUF, 2 threads, canvas 128: unmask 73.1, llama.cpp 69.0 ms (ratio 0.94).
# With oneDNN over packed weights and a thread per 4 M multiply-adds (2026-11-30, same VM;
# --no-parity; the 2-thread canvas-256 row from a separate --repeats 5 run):
#   2       128     45.77 (42.78-57.24)    73.12 (69.27-84.16)    1.60
#   2       256     109.12 (104.41-117.05) 168.97 (149.12-177.74) 1.55
#   1       128     96.24 (78.75-111.59)   182.91 (176.87-186.28) 1.90
#   1       256     163.32 (147.04-173.49) 275.27 (264.46-313.88) 1.69
#
# What it measures: MODEL_DIR is written as a GGUF (scripts/llada_gguf.py, --outtype, default
# bf16 = the checkpoint's bits) under a temp dir. For each thread count T and canvas C, prompt
# P = 32 tokens and G = C - 32 generated tokens, block 32, one token committed per step, greedy,
# the two tools run alternately N times each (unmask first). Reported: milliseconds per forward
# pass (one step = one full forward over the C-token canvas plus picking), median (min-max):
#   unmask:    stats.seconds / stats.forward_passes of --format json: its generation timer
#              (forwards and picking; excludes model load and tokenizing); G forward passes.
#              Also shown: stats.full_forward_seconds per forward (forwards alone).
#   llama.cpp: "total time" of diffusion_generate (a ggml_time_us timer around the step loop:
#              forwards and picking; excludes model load, context creation and tokenizing) / the
#              steps it ran, counted from its progress lines (one per llama_decode). Its block
#              schedule counts blocks over the whole canvas (C/32 blocks starting at the
#              prompt's end), so it is given C steps to get 32 steps per block; its last block
#              lies past the canvas and costs one extra forward (nothing to pick) before it
#              stops: G + 1 forward passes. Its own "time per step" divides by C; not used.
#   Both counts are checked (G and G + 1); so is the prompt (32 ids, the same in unmask, the
#   sentencepiece model and, when built, llama-tokenize on the GGUF). As a check that both timers
#   cover the same thing, each run's wall time outside the timer (process start, model load,
#   tokenizing, exit) is shown too.
# Settings passed: unmask -m MODEL_DIR --backend cpu --threads T --gen-length G --block-length 32
# --steps G --temperature 0 --no-eos-stop --format json (its default --cache none: every step is
# a full forward, as in llama.cpp, which has no cache for LLaDA); llama-diffusion-cli -m GGUF -t T
# -tb T -c C -b C -ub C (the canvas is its n_ubatch) --diffusion-block-length 32
# --diffusion-steps C --diffusion-algorithm 4 (confidence) --temp 0 --top-k 1 --seed 0, default
# flash-attention setting. llama-diffusion-cli formats the prompt with the GGUF's chat template
# (llada_gguf.py writes one that keeps the text) and prints no token count, so the script checks
# that it generates with a 33-token canvas and refuses a 32-token one (prompt = 32 tokens).
# Greedy in llama.cpp's example is --temp 0 --top-k 1 (with top-k off its chain samples from
# softmax even at temp 0); then every candidate's confidence is 1, so it commits each block
# left to right, while unmask commits the most confident position first. Work per step is the
# same (one forward over the canvas, picks for the block's masked positions); the committed
# tokens are not. Token parity is therefore checked (first, unless --no-parity) with block
# length 1, where both loops are plain left-to-right greedy: on an f32 GGUF (must match) and on
# the --outtype GGUF (informational: llama.cpp's bf16/f16 matmuls round activations to
# bf16/f16 while unmask multiplies in f32, which can flip near-tie argmaxes of a random model).
# Prompt: single-token words of the tokenizer (from a fixed list, cycled) joined by spaces,
# checked to be exactly 32 tokens; no BOS (the GGUF says add_bos false, as unmask does).
set -euo pipefail

die() { echo "compare_llamacpp.sh: $*" >&2; exit 2; }
usage() {
  echo "usage: $0 LLAMA_CPP_DIR MODEL_DIR [--repeats N] [--threads T[,T...]]" \
       "[--canvas C[,C...]] [--outtype bf16|f32|f16] [--no-parity]" >&2
  exit 2
}

[[ $# -ge 2 ]] || usage
LLAMA=$1 MODEL=$2
shift 2
REPEATS=5 THREADS=2 CANVASES=128,256 OUTTYPE=bf16 PARITY=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --repeats) REPEATS=${2:?}; shift 2 ;;
    --threads) THREADS=${2:?}; shift 2 ;;
    --canvas) CANVASES=${2:?}; shift 2 ;;
    --outtype) OUTTYPE=${2:?}; shift 2 ;;
    --no-parity) PARITY=0; shift ;;
    *) usage ;;
  esac
done
[[ $OUTTYPE =~ ^(bf16|f32|f16)$ ]] || usage
[[ $REPEATS =~ ^[1-9][0-9]*$ ]] || die "--repeats: a positive integer"
[[ $THREADS =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--threads: positive integers, comma-separated"

HERE=$(cd "$(dirname "$0")" && pwd)
UNMASK=${UNMASK:-$HERE/../build/unmask}
CLI=$LLAMA/build/bin/llama-diffusion-cli
TOKENIZE=$LLAMA/build/bin/llama-tokenize
PROMPT_LEN=32 BLOCK=32

[[ -x $CLI ]] || die "no $CLI (build it: cmake --build $LLAMA/build --target llama-diffusion-cli)"
[[ -d $LLAMA/gguf-py/gguf ]] || die "no $LLAMA/gguf-py/gguf (is $LLAMA a llama.cpp checkout?)"
for f in config.json model.safetensors tokenizer.model; do
  [[ -f $MODEL/$f ]] || die "no $MODEL/$f (MODEL_DIR must be a LLaDA-format model directory)"
done
PYCHECK="import sys; sys.path.insert(0, sys.argv[1]); import numpy, sentencepiece, gguf"
if [[ -n ${PYTHON:-} ]]; then
  PY=$PYTHON
  "$PY" -c "$PYCHECK" "$LLAMA/gguf-py" || die "$PY cannot import numpy, sentencepiece and gguf-py"
else
  PY=
  for p in python3 /usr/bin/python3; do
    if "$p" -c "$PYCHECK" "$LLAMA/gguf-py" 2>/dev/null; then PY=$p; break; fi
  done
  [[ -n $PY ]] || die "no python3 with numpy, sentencepiece, pyyaml, tqdm, requests (set PYTHON)"
fi
for c in ${CANVASES//,/ }; do
  [[ $c =~ ^[0-9]+$ ]] && (( c > PROMPT_LEN && c % BLOCK == 0 )) ||
    die "canvas $c: needs a multiple of $BLOCK above $PROMPT_LEN"
done

# unmask may be rebuilt while this runs: wait a little for a missing binary.
wait_unmask() {
  local i
  for i in $(seq 60); do [[ -x $UNMASK ]] && return 0; sleep 5; done
  die "no unmask binary at $UNMASK (build it or set UNMASK)"
}
wait_unmask

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Helpers: the prompt, parsing both tools' outputs, the parity check and the table.
cat > "$TMP/h.py" <<'EOF'
import json, re, statistics, sys
cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "prompt":  # tokenizer.model n -> the prompt text; its ids to the file args[2]
    import sentencepiece as spm
    sp, n = spm.SentencePieceProcessor(model_file=args[0]), int(args[1])
    words = ("the of and to in that he shall unto for his a lord they be is him not them it with "
             "all thou was which my me said but ye their have will thee from as are when this out "
             "were upon man by you king up there hath then people came had house on into her come "
             "one we before your also day land men god").split()
    words = [w for w in words if len(sp.encode(w)) == 1] or sys.exit("no single-token words")
    p = " ".join(words[i % len(words)] for i in range(n))
    ids = sp.encode(p)
    assert len(ids) == n, "prompt is not %d tokens" % n
    open(args[2], "w").write(json.dumps(ids))
    print(p)
elif cmd == "ids":  # ids.json unmask.json [llama-tokenize output] -> check all agree
    want = json.load(open(args[0]))
    got = json.load(open(args[1]))["prompt_ids"]
    assert got == want, "unmask's prompt ids %s differ from sentencepiece's %s" % (got, want)
    if len(args) > 2:
        m = re.search(r"\[[0-9, ]*\]", open(args[2]).read())
        lc = json.loads(m.group(0)) if m else None
        assert lc == want, "llama-tokenize's prompt ids %s differ from sentencepiece's %s" % (lc, want)
    print("prompt ids agree (%d: %s ... %s)" % (len(want), want[:4], want[-2:]))
elif cmd == "unmask":  # json prompt_len gen -> ms per forward, forwards, forward-only ms per forward
    r = json.load(open(args[0]))
    s = r["stats"]
    assert s["prompt_tokens"] == int(args[1]), "unmask read %d prompt tokens" % s["prompt_tokens"]
    assert s["forward_passes"] == int(args[2]), "unmask ran %d forwards, not %s" % (s["forward_passes"], args[2])
    f = s["forward_passes"]
    print("%.3f %d %.3f %.4f" % (1000 * s["seconds"] / f, f, 1000 * s["full_forward_seconds"] / f, s["seconds"]))
elif cmd == "llama":  # stderr log, forwards expected -> ms per forward, forwards
    log = open(args[0], "rb").read().decode("utf-8", "replace")
    total = float(re.search(r"total time: ([0-9.]+)ms", log).group(1))
    steps = len(re.findall(r"diffusion step: \d+/", log))
    assert steps == int(args[1]), "llama.cpp ran %d forwards, not %s" % (steps, args[1])
    print("%.3f %d - %.4f" % (total / steps, steps, total / 1000))
elif cmd == "llama_done":  # stderr log -> text (generated, log complete), failed, or cut
    log = open(args[0], "rb").read()
    i = log.find(b"total time:")
    if i >= 0 and re.match(rb"total time:[^\n]*\n(?:[0-9.]+ [A-Z] )?\n", log[i:]):
        print("text")
    elif b"generation failed" in log:
        print("failed")
    else:
        print("cut")
elif cmd == "parity":  # unmask.json llama.log model_dir
    import sentencepiece as spm
    ids = json.load(open(args[0]))["ids"]
    log = open(args[1], "rb").read()
    # after the "total time" line: one log entry "\n<text>\n", maybe behind a log prefix
    got = log[log.index(b"\n", log.index(b"total time:")) + 1:]
    got = re.sub(rb"^[0-9.]+ [A-Z] ", b"", got).removeprefix(b"\n").removesuffix(b"\n")
    cfg = json.load(open(args[2] + "/config.json"))
    sp = spm.SentencePieceProcessor(model_file=args[2] + "/tokenizer.model")
    special = {cfg.get(k) for k in ("mask_token_id", "eos_token_id", "bos_token_id", "pad_token_id")}
    # llama.cpp's detokenizer (SPM, special=false): control and unknown ids print nothing, byte
    # pieces print their byte, "▁" is a space; one leading space of the FIRST id is dropped.
    want = b""
    for k, i in enumerate(ids):
        if i in special or sp.is_control(i) or sp.is_unknown(i):
            continue
        piece = sp.id_to_piece(i)
        b = bytes([int(piece[3:5], 16)]) if sp.is_byte(i) else piece.replace("\u2581", " ").encode()
        want += b.removeprefix(b" ") if k == 0 else b
    print("  unmask ids:     ", ids)
    print("  unmask as text: ", want)
    print("  llama.cpp text: ", got)
    print("  parity:", "MATCH" if want == got else "DIFFER")
    sys.exit(0 if want == got else 1)
elif cmd == "table":  # results file: tool threads canvas ms forwards fwd_ms timed_s wall_s
    rows = [l.split() for l in open(args[0])]
    def stat(tool, t, c, col=3):
        sel = [r for r in rows if r[0] == tool and r[1] == t and r[2] == c]
        v = [float(r[col]) for r in sel]
        out = [float(r[7]) - float(r[6]) for r in sel]
        return statistics.median(v), min(v), max(v), sel[0][4], statistics.median(out)
    fmt = lambda s: "%.2f (%.2f-%.2f) x%s" % s[:4]
    print("ms per forward pass, median (min-max) over %s runs; x N: forward passes per run"
          % len([r for r in rows if r[0] == "unmask" and r[1] == rows[0][1] and r[2] == rows[0][2]]))
    print("%-4s %-6s %-30s %-30s %-6s %-17s %-11s %s" % ("thr", "canvas", "unmask", "llama.cpp",
          "ratio", "paired (min-max)", "unmask fwd", "outside timer s (u / l)"))
    for t, c in dict.fromkeys((r[1], r[2]) for r in rows):
        u, l = stat("unmask", t, c), stat("llama", t, c)
        uf = stat("unmask", t, c, 5)
        pair = [float(b[3]) / float(a[3]) for a, b in zip(
            [r for r in rows if r[0] == "unmask" and r[1] == t and r[2] == c],
            [r for r in rows if r[0] == "llama" and r[1] == t and r[2] == c])]
        pr = "%.2f (%.2f-%.2f)" % (statistics.median(pair), min(pair), max(pair))
        print("%-4s %-6s %-30s %-30s %-6.2f %-17s %-11.2f %.2f / %.2f" % (t, c, fmt(u), fmt(l),
              l[0] / u[0], pr, uf[0], u[4], l[4]))
    print("ratio = llama.cpp / unmask medians (> 1: unmask is faster); paired: the same ratio per "
          "back-to-back pair of runs; unmask fwd: its forwards alone (stats.full_forward_seconds), "
          "median ms; outside timer: median wall seconds a run spent outside its own timer")
EOF
h() { "$PY" "$TMP/h.py" "$@"; }
now() { echo "${EPOCHREALTIME/,/.}"; }
load1() { cut -d' ' -f1 /proc/loadavg; }

# The OpenBLAS core unmask runs with.
blas_core() {
  local line lib
  line=$("$UNMASK" info -m "$MODEL" --backend cpu 2>/dev/null | grep -i -m1 '^blas' || true)
  if [[ -n $line ]]; then echo "$line (unmask info)"; return; fi
  lib=$(ldd "$UNMASK" 2>/dev/null | awk '/libopenblas/ {print $3; exit}')
  [[ -n $lib ]] || lib=libopenblas.so.0
  "$PY" - "$lib" <<'EOF' 2>/dev/null || echo "unknown (cannot load $lib)"
import ctypes, sys
l = ctypes.CDLL(sys.argv[1])
for f in ("openblas_get_corename", "openblas_get_config"):
    getattr(l, f).restype = ctypes.c_char_p
print("%s kernels (%s; probed: %s in this environment)" % (l.openblas_get_corename().decode(),
      l.openblas_get_config().decode().strip(), sys.argv[1]))
EOF
}

llama_version() {
  local v
  if v=$(git -C "$LLAMA" rev-parse HEAD 2>/dev/null); then echo "commit $v"; return; fi
  if [[ -n ${LLAMA_CPP_COMMIT:-} ]]; then echo "commit $LLAMA_CPP_COMMIT (\$LLAMA_CPP_COMMIT)"; return; fi
  v=$("$CLI" --version 2>&1 | grep -m1 -i 'version' || true)
  echo "${v:-unknown version} (not a git checkout; set LLAMA_CPP_COMMIT)"
}

PROMPT=$(h prompt "$MODEL/tokenizer.model" $PROMPT_LEN "$TMP/ids.json")
echo "prompt ($PROMPT_LEN tokens): $PROMPT"
echo "unmask: $UNMASK ($("$UNMASK" --version 2>&1 | head -1), built $(date -r "$UNMASK" '+%F %T'))"
echo "  OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE-<unset>}; OpenBLAS: $(blas_core)"
w=$("$UNMASK" info -m "$MODEL" --backend cpu 2>/dev/null | grep -m1 '^weights:' || true)
[[ -z $w ]] || echo "  $w"
echo "llama.cpp: $CLI, $(llama_version)"
echo "  $(grep -E '^GGML_(NATIVE|AVX512|BLAS|OPENMP|CPU_ALL_VARIANTS|BACKEND_DL):' \
  "$LLAMA/build/CMakeCache.txt" 2>/dev/null | tr '\n' ' ')"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores;" \
     "threads $THREADS; python: $PY"

run_unmask() {  # threads canvas block out.json
  local gen=$(($2 - PROMPT_LEN))
  wait_unmask
  "$UNMASK" -m "$MODEL" --backend cpu --threads "$1" --gen-length $gen --block-length "$3" \
    --steps $gen --temperature 0 --no-eos-stop --format json -q "$PROMPT" > "$4"
}
# llama-diffusion-cli logs through common_log's worker thread, which it neither flushes nor
# joins before exiting (the logger is leaked on purpose, llama.cpp issue 22142): its last entries
# ("total time", the text) are often lost, nearly always for short runs on an idle machine. So
# it runs with a small LD_PRELOAD shim, built here with $CC (default cc) if one is found, whose
# exit handler calls llama.cpp's own common_log_pause() (it writes out the queue and joins the
# worker); this is after the timed loop and changes nothing else. Without a compiler, or should
# a log still end early, the run is repeated (up to 5 times; repeats are counted and printed).
PRELOAD=
cat > "$TMP/flushlog.c" <<'EOF2'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>
static void flush_log(void) {
  void* (*log_main)(void) = (void* (*)(void)) dlsym(RTLD_DEFAULT, "_Z15common_log_mainv");
  void (*log_pause)(void*) = (void (*)(void*)) dlsym(RTLD_DEFAULT, "_Z16common_log_pauseP10common_log");
  if (log_main && log_pause) log_pause(log_main()); else usleep(200000);
}
__attribute__((constructor)) static void init(void) { atexit(flush_log); }
EOF2
if "${CC:-cc}" -shared -fPIC -O1 -o "$TMP/flushlog.so" "$TMP/flushlog.c" -ldl 2>/dev/null; then
  PRELOAD=$TMP/flushlog.so
fi
LLAMA_RETRIES=0
run_llama() {  # gguf threads canvas block steps out.log -> 0: generated, 1: "generation failed"
  local try
  for try in 1 2 3 4 5; do
    LD_PRELOAD=${PRELOAD:-${LD_PRELOAD:-}} "$CLI" -m "$1" -p "$PROMPT" -t "$2" -tb "$2" -ngl 0 -c "$3" -b "$3" -ub "$3" \
      --diffusion-block-length "$4" --diffusion-steps "$5" --diffusion-algorithm 4 \
      --temp 0 --top-k 1 --seed 0 > /dev/null 2> "$6" || { tail -20 "$6" >&2; die "llama-diffusion-cli failed"; }
    case $(h llama_done "$6") in
      text) return 0 ;;
      failed) return 1 ;;
    esac
    LLAMA_RETRIES=$((LLAMA_RETRIES + 1))
  done
  tail -5 "$6" >&2
  die "llama-diffusion-cli's log ended early 5 times in a row"
}
run_llama_canvas() {  # gguf threads canvas block out.log; steps = canvas: block steps per block
  run_llama "$1" "$2" "$3" "$4" "$3" "$5" || die "llama-diffusion-cli: generation failed (see $5)"
}

echo "== converting: $OUTTYPE GGUF"
"$PY" "$HERE/llada_gguf.py" "$MODEL" "$TMP/model.gguf" --llama-cpp "$LLAMA" --outtype "$OUTTYPE"

# The prompt's ids: sentencepiece's, unmask's and (when built) llama-tokenize's on the GGUF.
T1=${THREADS%%,*}
run_unmask "$T1" $((PROMPT_LEN + BLOCK)) $BLOCK "$TMP/ids-u.json"
if [[ -x $TOKENIZE ]]; then
  "$TOKENIZE" -m "$TMP/model.gguf" -p "$PROMPT" --ids --log-disable > "$TMP/ids-l.txt" 2>/dev/null ||
    die "llama-tokenize failed"
  h ids "$TMP/ids.json" "$TMP/ids-u.json" "$TMP/ids-l.txt"
else
  h ids "$TMP/ids.json" "$TMP/ids-u.json"
  echo "  (no $TOKENIZE: llama.cpp's ids unchecked; the parity check covers them)"
fi
# llama-diffusion-cli formats the prompt with the GGUF's chat template (llada_gguf.py writes one
# that keeps the text as is) and prints no token count; it generates only when the canvas
# (-ub) is longer than the prompt: a 32-token canvas must fail and a 33-token one must run.
! run_llama "$TMP/model.gguf" "$T1" $PROMPT_LEN $PROMPT_LEN 1 "$TMP/n.log" &&
  run_llama "$TMP/model.gguf" "$T1" $((PROMPT_LEN + 1)) $((PROMPT_LEN + 1)) 1 "$TMP/n.log" ||
  die "llama-diffusion-cli does not see a $PROMPT_LEN-token prompt (a chat template in the GGUF?)"
echo "llama-diffusion-cli sees a $PROMPT_LEN-token prompt (canvas $PROMPT_LEN: no room; $((PROMPT_LEN + 1)): runs)"

if (( PARITY )); then
  "$PY" "$HERE/llada_gguf.py" "$MODEL" "$TMP/f32.gguf" --llama-cpp "$LLAMA" --outtype f32 > /dev/null
  run_unmask "$T1" 64 1 "$TMP/p.json"
  echo "== token parity: f32 GGUF, canvas 64, block 1 (left-to-right greedy in both)"
  run_llama_canvas "$TMP/f32.gguf" "$T1" 64 1 "$TMP/p.log"
  h parity "$TMP/p.json" "$TMP/p.log" "$MODEL" || die "f32 outputs differ (see above)"
  rm -f "$TMP/f32.gguf"
  if [[ $OUTTYPE != f32 ]]; then
    echo "== token parity: $OUTTYPE GGUF (informational; llama.cpp rounds activations to $OUTTYPE)"
    run_llama_canvas "$TMP/model.gguf" "$T1" 64 1 "$TMP/p.log"
    h parity "$TMP/p.json" "$TMP/p.log" "$MODEL" || true
  fi
fi

echo "== timing: $OUTTYPE GGUF, prompt $PROMPT_LEN, block $BLOCK, one token per step, greedy," \
     "$REPEATS repeats, alternating; load average $(load1)"
: > "$TMP/results"
for t in ${THREADS//,/ }; do
  for c in ${CANVASES//,/ }; do
    g=$((c - PROMPT_LEN))
    for r in $(seq "$REPEATS"); do
      t0=$(now); run_unmask "$t" "$c" $BLOCK "$TMP/u.json"; t1=$(now)
      u=$(h unmask "$TMP/u.json" $PROMPT_LEN $g)
      run_llama_canvas "$TMP/model.gguf" "$t" "$c" $BLOCK "$TMP/l.log"; t2=$(now)
      l=$(h llama "$TMP/l.log" $((g + 1)))
      read -r ums uf ufwd us <<< "$u"
      read -r lms lf _ ls <<< "$l"
      printf '  threads %s canvas %s run %s: unmask %s ms/forward (x%s), llama.cpp %s ms/forward (x%s)\n' \
        "$t" "$c" "$r" "$ums" "$uf" "$lms" "$lf"
      echo "unmask $t $c $ums $uf $ufwd $us $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.4f", b - a}')" >> "$TMP/results"
      echo "llama $t $c $lms $lf - $ls $(awk -v a="$t1" -v b="$t2" 'BEGIN{printf "%.4f", b - a}')" >> "$TMP/results"
    done
  done
done
echo "load average after: $(load1); llama.cpp runs repeated for a log cut short: $LLAMA_RETRIES" \
     "(log flush shim: $([[ -n $PRELOAD ]] && echo yes || echo no))"
echo
h table "$TMP/results"
