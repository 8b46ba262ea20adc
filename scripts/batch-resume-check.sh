#!/usr/bin/env bash
# The batch crash-safety check at full size: 1,000 lines (20 malformed) on the default model,
# SIGKILL half-way, --resume, then compare with an uninterrupted run.
# Usage: scripts/batch-resume-check.sh [UNMASK_BINARY] [extra unmask options, e.g. -m DIR]
set -euo pipefail
BIN=${1:-build/unmask}
shift || true
OPTS=("--gen-length" "32" "--block-length" "32" "--steps" "16" "-q" "$@")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

python3 - "$WORK/in.jsonl" <<'PY'
import json, random, sys
random.seed(1)
words = "the light and darkness of waters in the beginning God created heaven earth".split()
bad = set(random.sample(range(1000), 20))
kinds = ['{"prompt": ', '[1, 2]', '{"id": "only-id"}', '{"prompt": 3}', '{"prompt": "x", "tempreture": 1}']
with open(sys.argv[1], "w") as f:
    for i in range(1000):
        if i in bad:
            k = kinds[i % len(kinds)]
            f.write((k.replace('"only-id"', '"bad%d"' % i)) + "\n")
        else:
            rec = {"id": "q%d" % i, "prompt": " ".join(random.choices(words, k=random.randint(2, 12)))}
            if i % 7 == 0: rec["seed"] = i; rec["temperature"] = 0.5
            f.write(json.dumps(rec) + "\n")
PY

echo "reference run (uninterrupted)..."
set +e
"$BIN" batch "${OPTS[@]}" -i "$WORK/in.jsonl" -o "$WORK/ref.jsonl"
ref_rc=$?
set -e
[ "$ref_rc" -eq 4 ] || { echo "FAIL: reference run exited $ref_rc, expected 4 (20 malformed lines)"; exit 1; }

echo "interrupted run: SIGKILL at 500 records..."
"$BIN" batch "${OPTS[@]}" -i "$WORK/in.jsonl" -o "$WORK/out.jsonl" &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
  n=0
  [ -f "$WORK/out.jsonl" ] && n=$(wc -l < "$WORK/out.jsonl")
  [ "$n" -ge 500 ] && break
  sleep 0.05
done
kill -9 "$pid" 2>/dev/null || { echo "FAIL: the run finished before it could be killed"; exit 1; }
wait "$pid" 2>/dev/null || true
echo "killed with $(wc -l < "$WORK/out.jsonl") complete lines"

echo "resume..."
set +e
"$BIN" batch "${OPTS[@]}" -i "$WORK/in.jsonl" -o "$WORK/out.jsonl" --resume
rc=$?
set -e
[ "$rc" -eq 4 ] || { echo "FAIL: resume exited $rc, expected 4"; exit 1; }

python3 - "$WORK/ref.jsonl" "$WORK/out.jsonl" <<'PY'
import json, sys
def load(p):
    recs = [json.loads(l) for l in open(p)]
    out = {}
    for r in recs:
        key = json.dumps(r["id"])
        assert key not in out, "duplicate record for id %s" % key
        out[key] = (r.get("text"), r.get("ids"), r.get("error"), r["line"])
    return recs, out
ref_recs, ref = load(sys.argv[1])
got_recs, got = load(sys.argv[2])
errors = sum(1 for v in got.values() if v[2] is not None)
assert len(got_recs) == 1000, "expected 1000 records, got %d" % len(got_recs)
assert errors == 20, "expected 20 error records, got %d" % errors
assert got == ref, "resumed output differs from the uninterrupted run"
print("OK: 1000 records (980 results, 20 errors), one per id, identical to the uninterrupted run")
PY
