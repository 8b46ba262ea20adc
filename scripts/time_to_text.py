#!/usr/bin/python3
# Time to first text of `unmask "And God said"` as a person at a terminal sees it: unmask's stdout
# is a pseudo-terminal, so it streams (the default there); --no-stream is the all-at-once case.
#
# Interpreter: /usr/bin/python3, standard library only (pty). Median of N runs per case.
#     /usr/bin/python3 scripts/time_to_text.py [--unmask build/unmask] [--runs 10]
import argparse
import os
import pty
import statistics
import time
from pathlib import Path


def first_text_seconds(args):
    """Seconds from the start until unmask's first visible byte, and its whole output."""
    t0 = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(args[0], args)
    first, out = None, b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        if first is None and chunk.strip():
            first = time.perf_counter() - t0
        out += chunk
    os.waitpid(pid, 0)
    return first, out


def main():
    repo = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--unmask", default=str(repo / "build" / "unmask"))
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--prompt", default="And God said")
    a = ap.parse_args()
    for label, extra in (("cpu, streamed (default)", ["--backend", "cpu"]), ("auto, streamed (default)", []),
                         ("cpu, --no-stream", ["--backend", "cpu", "--no-stream"])):
        times, texts = [], set()
        for _ in range(a.runs):
            t, out = first_text_seconds([a.unmask, "-q"] + extra + [a.prompt])
            times.append(t)
            texts.add(out)
        print("%-26s median %5.0f ms  (min %.0f, max %.0f)%s" % (
            label, statistics.median(times) * 1000, min(times) * 1000, max(times) * 1000,
            "" if len(texts) == 1 else "  TEXT DIFFERS BETWEEN RUNS"))


if __name__ == "__main__":
    main()
