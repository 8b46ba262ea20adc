#!/usr/bin/python3
# A bounded load test of `unmask serve`, compared with `unmask batch` on the same prompts.
#
# Interpreter: /usr/bin/python3 (3.8 or later), standard library only.
#
# What it measures: for each client concurrency C (default 1, 4, 16), C threads send the same
# N prompts (default 32) to POST /v1/completions of a server it starts itself, and it reports
# requests/s, completion tokens/s, p50 and p99 request latency, and the batch occupancy of that
# level (mean requests per engine step over --max-batch, from GET /metrics). Then it runs the
# prompts through `unmask batch` with the same batch size as the ceiling (no HTTP, no waiting
# for clients, every batch full), and prints each level's tokens/s as a fraction of it.
# It also checks that continuous batching does not change the answers: with temperature 0 and
# seed 0 every prompt's text must be the same at every concurrency and in `unmask batch`. It
# exits 1 on any mismatch or failed request.
#
# Run from anywhere (the repository is found from this file's location):
#     /usr/bin/python3 scripts/serve_load.py
#     /usr/bin/python3 scripts/serve_load.py --quick          # 8 prompts, 32 tokens: seconds
# About a minute with the defaults on a 2-core CPU with the bundled model.
import argparse
import http.client
import json
import os
import queue
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Verse openings for the bundled model (trained on the King James Bible, it continues a verse
# prefix). Used unless --prompts-file names a text file.
BUILTIN_PROMPTS = [
    "In the beginning",
    "And God said",
    "The LORD is my shepherd",
    "Blessed are the poor in spirit",
    "And it came to pass",
    "Now the serpent was more subtil",
    "For God so loved the world",
    "Then said Jesus unto them",
    "Hear, O Israel",
    "Vanity of vanities, saith the Preacher",
    "Let there be light",
    "And the earth was without form",
    "Praise ye the LORD",
    "The heavens declare the glory",
    "Behold, I stand at the door",
    "Thus saith the LORD",
    "And Moses said unto the people",
    "Blessed is the man that walketh",
    "The fear of the LORD",
    "My son, hear the instruction",
    "Comfort ye, comfort ye my people",
    "And David said to Saul",
    "Remember now thy Creator",
    "I will lift up mine eyes",
    "And the word was made flesh",
    "Be still, and know",
    "Ask, and it shall be given",
    "Charity suffereth long",
    "And he opened his mouth",
    "To every thing there is a season",
    "Except the LORD build the house",
    "And the angel said unto her",
]


def read_prompts(path, n):
    """The first 3 to 6 words of n distinct non-empty lines (the count cycles, so the prompts
    vary in length); the built-in list when path is None."""
    if path is None:
        prompts = BUILTIN_PROMPTS
    else:
        prompts, seen = [], set()
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                words = line.split()
                if len(words) < 3:
                    continue
                p = " ".join(words[: 3 + len(prompts) % 4])
                if p not in seen:
                    seen.add(p)
                    prompts.append(p)
                if len(prompts) == n:
                    break
    if len(prompts) < n:
        sys.exit(f"serve_load.py: only {len(prompts)} distinct prompts available, {n} asked for (--prompts)")
    return prompts[:n]


class Server:
    """`unmask serve` as a child process on a free port."""

    def __init__(self, args):
        cmd = [args.unmask, "serve", "--port", "0", "-q", "--max-batch", str(args.max_batch),
               "--max-queue", str(max(64, args.prompts))]
        cmd += common_options(args)
        # The server is ours and on loopback: a key from the environment would only make every
        # request fail with 401.
        env = {k: v for k, v in os.environ.items() if k != "UNMASK_API_KEY"}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.log = []
        port = queue.Queue()

        # stderr is drained for the server's whole life, or a full pipe would block it.
        def drain():
            for line in self.proc.stderr:
                self.log.append(line.rstrip("\n"))
                m = re.search(r"listening on http://[^\s]*:(\d+)", line)
                if m:
                    port.put(int(m.group(1)))
            port.put(None)

        threading.Thread(target=drain, daemon=True).start()
        try:
            self.port = port.get(timeout=30)
        except queue.Empty:
            self.port = None
        if self.port is None:
            self.stop()
            sys.exit("serve_load.py: the server did not start:\n  " + "\n  ".join(self.log))
        deadline = time.monotonic() + 120
        while self.get("/health")[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit("serve_load.py: the server did not become ready:\n  " + "\n  ".join(self.log))
            time.sleep(0.1)

    def get(self, path):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            c.request("GET", path)
            r = c.getresponse()
            body = r.read().decode()
            c.close()
            return r.status, body
        except OSError:
            return None, ""

    def metrics(self):
        status, body = self.get("/metrics")
        if status != 200:
            sys.exit(f"serve_load.py: GET /metrics answered {status}")
        values = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def common_options(args):
    """Options that must be the same for the server and for `unmask batch`."""
    out = ["--threads", str(args.threads)]
    if args.model:
        out += ["--model", args.model]
    return out


def request_body(args, prompt):
    body = {"prompt": prompt, "max_tokens": args.max_tokens, "temperature": 0, "seed": 0}
    if args.steps:
        body["steps"] = args.steps
    return json.dumps(body)


def run_level(server, args, prompts, concurrency):
    """Sends every prompt once with `concurrency` clients; returns the level's numbers and the
    texts by prompt index."""
    todo = queue.Queue()
    for i, p in enumerate(prompts):
        todo.put((i, p))
    texts, latencies, tokens, errors = {}, [], [], []
    rejected = [0]  # 429s, each retried after the server's Retry-After
    resent = [0]    # requests sent again on a fresh connection
    lock = threading.Lock()

    def client():
        # One connection per client, kept alive across its requests, as a real client pool does.
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=args.request_timeout)
        while True:
            try:
                i, p = todo.get_nowait()
            except queue.Empty:
                break
            body = request_body(args, p)
            t0 = time.monotonic()
            retried = False
            for _ in range(20):
                try:
                    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
                    r = conn.getresponse()
                    data = r.read()
                except (http.client.HTTPException, OSError) as e:
                    conn.close()
                    # The server may close a kept-alive connection just as a request goes out;
                    # that request never reached the engine, so sending it once more is safe.
                    # A timeout is different: the request may still be running.
                    if not retried and not isinstance(e, socket.timeout):
                        retried = True
                        with lock:
                            resent[0] += 1
                        continue
                    with lock:
                        errors.append(f"prompt {i}: {type(e).__name__}: {e}")
                    break
                if r.status == 429:
                    with lock:
                        rejected[0] += 1
                    time.sleep(float(r.getheader("Retry-After", "1")))
                    continue
                latency = time.monotonic() - t0
                if r.status != 200:
                    with lock:
                        errors.append(f"prompt {i}: HTTP {r.status}: {data.decode(errors='replace')[:200]}")
                    break
                j = json.loads(data)
                with lock:
                    texts[i] = j["choices"][0]["text"]
                    latencies.append(latency)
                    tokens.append(j["usage"]["completion_tokens"])
                break
        conn.close()

    before = server.metrics()
    t0 = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(min(concurrency, len(prompts)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    after = server.metrics()

    # unmask_batch_occupancy is an average since the server started; this level's own is the
    # difference of the counters it is made of.
    steps = after["unmask_step_seconds_count"] - before["unmask_step_seconds_count"]
    step_requests = after["unmask_step_requests_total"] - before["unmask_step_requests_total"]
    occupancy = step_requests / steps / after["unmask_batch_slots"] if steps else 0.0
    if len(latencies) >= 2:
        p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    else:
        p99 = latencies[0] if latencies else float("nan")
    return {
        "concurrency": concurrency,
        "ok": len(latencies),
        "rps": len(latencies) / wall,
        "tps": sum(tokens) / wall,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": p99,
        "max": max(latencies, default=float("nan")),
        "occupancy": occupancy,
        "steps": int(steps),
        "rejected": rejected[0],
        "resent": resent[0],
        "errors": errors,
        "wall": wall,
    }, texts


def run_batch(args, prompts, workdir):
    """The same prompts through `unmask batch`; returns (texts by index, tok/s, wall seconds)."""
    src, dst = Path(workdir, "prompts.jsonl"), Path(workdir, "out.jsonl")
    with open(src, "w", encoding="utf-8") as f:
        for i, p in enumerate(prompts):
            f.write(json.dumps({"id": i, "prompt": p}) + "\n")
    # Without -q: its summary line on stderr holds the generation-only rate, which leaves out
    # loading the model and tokenizing (the server did those before the clock started).
    cmd = [args.unmask, "batch", "-i", str(src), "-o", str(dst), "--gen-length", str(args.max_tokens),
           "--batch-size", str(args.max_batch), "--temperature", "0", "--seed", "0"]
    cmd += common_options(args)
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"serve_load.py: {' '.join(cmd)} exited {p.returncode}:\n{p.stderr}")
    m = re.search(r"^batch: .* (\d+) tokens in ([\d.]+) s of generation \(([\d.]+) tok/s\)", p.stderr, re.M)
    if not m:
        sys.exit(f"serve_load.py: no summary line in unmask batch's stderr:\n{p.stderr}")
    texts = {}
    with open(dst, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            texts[r["id"]] = r.get("text")
    return texts, float(m.group(3)), wall


def main():
    ap = argparse.ArgumentParser(description="Bounded load test of unmask serve, against unmask batch as the ceiling")
    ap.add_argument("--unmask", default=str(REPO / "build" / "unmask"), help="the binary (default: %(default)s)")
    ap.add_argument("--model", help="model directory (default: the binary's default, the bundled model)")
    ap.add_argument("--max-batch", type=int, default=8,
                    help="the server's --max-batch and batch's --batch-size (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads of both (0: all cores)")
    ap.add_argument("--concurrency", default="1,4,16", help="client counts, comma-separated (default: %(default)s)")
    ap.add_argument("--prompts", type=int, default=32, help="prompts per level (default: %(default)s)")
    ap.add_argument("--prompts-file", help="take prompts from the lines of this text file (default: a built-in list)")
    ap.add_argument("--max-tokens", type=int, default=64,
                    help="max_tokens, and batch's --gen-length; keep it a multiple of the block length "
                         "(16 on the bundled model) so both decode the same canvas (default: %(default)s)")
    ap.add_argument("--steps", type=int, help="denoising steps (default: the server's, max-tokens)")
    ap.add_argument("--request-timeout", type=float, default=300, help="seconds per request (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="8 prompts of 32 tokens: a smoke test in seconds")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.max_tokens = 8, 32
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not Path(args.unmask).is_file():
        sys.exit(f"serve_load.py: no binary at {args.unmask} (build it, or pass --unmask)")
    prompts = read_prompts(args.prompts_file, args.prompts)

    server = Server(args)
    try:
        # One request first, unmeasured: the first forward pass allocates the engine's buffers.
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=args.request_timeout)
        c.request("POST", "/v1/completions", request_body(args, prompts[0]), {"Content-Type": "application/json"})
        r = c.getresponse()
        warm = r.read()
        c.close()
        if r.status != 200:
            sys.exit(f"serve_load.py: the warm-up request got HTTP {r.status}: {warm.decode(errors='replace')}")
        results, server_texts = [], {}
        for conc in levels:
            res, texts = run_level(server, args, prompts, conc)
            results.append(res)
            server_texts[conc] = texts
            print(f"  concurrency {conc}: {res['ok']}/{len(prompts)} ok in {res['wall']:.1f} s, "
                  f"{res['steps']} engine steps, {res['resent']} resent after a closed connection",
                  file=sys.stderr)
    finally:
        server.stop()

    with tempfile.TemporaryDirectory(prefix="serve_load.") as tmp:
        batch_texts, batch_tps, batch_wall = run_batch(args, prompts, tmp)
    print(f"  unmask batch: {len(batch_texts)} records in {batch_wall:.1f} s", file=sys.stderr)

    print(f"\nunmask serve vs unmask batch: {len(prompts)} prompts, max_tokens {args.max_tokens}, "
          f"max-batch {args.max_batch}, threads {args.threads or os.cpu_count()}")
    print(f"{'clients':>8} {'req/s':>7} {'tok/s':>8} {'p50 s':>7} {'p99 s':>7} {'max s':>7} "
          f"{'occupancy':>9} {'429s':>5} {'vs batch':>8}")
    for r in results:
        print(f"{r['concurrency']:>8} {r['rps']:>7.2f} {r['tps']:>8.1f} {r['p50']:>7.2f} {r['p99']:>7.2f} "
              f"{r['max']:>7.2f} {r['occupancy']:>9.3f} {r['rejected']:>5} {r['tps'] / batch_tps:>8.2f}")
    print(f"{'batch':>8} {'':>7} {batch_tps:>8.1f} {'':>7} {'':>7} {'':>7} {'':>9} {'':>5} {1:>8.2f}")
    print("occupancy: mean requests per engine step / max-batch, over that level's steps; "
          "batch tok/s: generation only, from its summary line")

    failed = [e for r in results for e in r["errors"]]
    mismatches = []
    for conc, texts in server_texts.items():
        for i in range(len(prompts)):
            if i in texts and texts[i] != batch_texts.get(i):
                mismatches.append((conc, i))
    compared = sum(len(t) for t in server_texts.values())
    print(f"\nmismatches: {len(mismatches)} of {compared} (server text vs unmask batch, same prompt and settings)")
    for conc, i in mismatches[:5]:
        print(f"  clients {conc}, prompt {i} {prompts[i]!r}:\n    serve: {server_texts[conc][i]!r}\n"
              f"    batch: {batch_texts.get(i)!r}")
    if failed:
        print(f"failed requests: {len(failed)}")
        for e in failed[:5]:
            print("  " + e)
    return 1 if mismatches or failed else 0


if __name__ == "__main__":
    sys.exit(main())
