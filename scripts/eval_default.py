#!/usr/bin/python3
"""Compare two bundled-model directories (old and new) on the same held-out split (issue 17).

Interpreter: /usr/bin/python3 (Debian) with the Debian packages python3-torch, python3-numpy,
python3-sentencepiece and bible-kjv (the corpus), plus a built `unmask` binary. No network.
The corpus, split, example layouts, model and masked-CE loop are imported from
scripts/train_default.py, so the numbers are those the training script logs.

1. Validation masked cross-entropy (nats per token) on the held-out chapters (every 50th chapter
   in canonical order: 23 chapters, 705 verses), verse tokens only (EOS fill excluded), every
   token masked independently with probability t in {0.25, 0.5, 0.75} (masking seed 1234, the
   same masks for both models), in three layouts:
     verse64     each held-out verse alone, EOS fill to 64 tokens (the old model's training
                 layout and the numbers of its README);
     passage64   64 tokens from every held-out verse boundary, running on through the chapter;
     passageN    the same with N = the new model's unmask_train_seq_len.
   Also bits per character (per byte of UTF-8 text; the KJV is ASCII) of the same masked tokens,
   which stays comparable if the two tokenizers differ; the script says whether they do.
2. Generation with `unmask` (a subprocess, `--format json`, reading `text`) at each model's
   default settings (config.json's unmask_defaults, greedy) on 50 held-out verse prefixes: the
   verses val[k * 705 // 50] for k = 0..49 (spread evenly over the held-out chapters), prefix =
   the first max(3, words // 3) words (the rule of scripts/speed_quality.py). Words are runs of
   letters (an inner apostrophe allowed). Reported: mean answer length in words; share of words
   (lower-cased) that occur in the training split; distinct-2 over all answers (distinct word
   bigrams / bigrams) and within answers (sum of each answer's distinct bigrams / sum of its
   bigrams); share of repeated 4-grams (4-gram occurrences that repeat an earlier 4-gram of the
   same answer / all 4-grams); share of answers that end with EOS.
3. Decoding order: the same 50 prompts replayed in torch with the LLaDA block loop
   (low-confidence remasking, greedy, early stop as in unmask), recording the step at which each
   position is committed; the replay's answers are checked against unmask's. Reported: tokens
   per step; share of steps whose committed positions are not the leftmost masked positions of
   the block; share of inverted pairs (two positions of one block, the right one committed at an
   earlier step). Strict left to right gives 0 for both.
4. Time to text: wall time of `unmask -m DIR "And God said"` (process start to exit, loading
   included), median of 10 runs.
5. The answers of both models to "In the beginning", "And God said", "The LORD is my shepherd".

Usage:
  /usr/bin/python3 scripts/eval_default.py --old OLD_DIR --new models [--unmask build/unmask]
      [--threads N] [--out-md FILE] [--update-readme models/README.md]
(--threads: torch threads for the CE and the replay; unmask runs with its own default threads.)
"""

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_default as T  # noqa: E402  (pins BLAS threads / kernel before torch loads)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_PROMPTS = 50
TS = (0.25, 0.5, 0.75)
SHOWCASE = ["In the beginning", "And God said", "The LORD is my shepherd"]
TIME_PROMPT = "And God said"
WORD_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
BEGIN = "<!-- eval_default.py: begin -->"
END = "<!-- eval_default.py: end -->"


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------

class Loaded:
    def __init__(self, d):
        import sentencepiece as spm
        self.dir = d
        self.cfg = json.load(open(os.path.join(d, "config.json")))
        self.sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "tokenizer.model"))
        self.model = T.LLaDAModel(self.cfg)
        self.model.load_state_dict(T.read_safetensors(os.path.join(d, "model.safetensors")), strict=True)
        self.model.eval()
        self.mask_id, self.eos_id = self.cfg["mask_token_id"], self.cfg["eos_token_id"]
        self.defaults = self.cfg.get("unmask_defaults", T.UNMASK_DEFAULTS)
        self.train_len = self.cfg.get("unmask_train_seq_len", 64)
        self.tok_blob = open(os.path.join(d, "tokenizer.model"), "rb").read()
        # UTF-8 bytes of each piece as it appears in text ("▁" is the space)
        nb = []
        for i in range(self.sp.get_piece_size()):
            p = self.sp.id_to_piece(i)
            if self.sp.is_byte(i):
                nb.append(1)
            elif self.sp.is_control(i) or self.sp.is_unknown(i) or i in (self.mask_id, self.eos_id):
                nb.append(0)
            else:
                nb.append(len(p.replace("\u2581", " ").encode("utf-8")))
        self.piece_bytes = torch.tensor(nb, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# 1. masked CE
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def masked_ce(m, data, seed=1234, bs=64):
    """Same masks and order as train_default.evaluate; returns {t: (CE verse tokens, bits/char)}."""
    res = {}
    for t in TS:
        g = torch.Generator().manual_seed(seed)
        ce_sum = n = nbytes = 0.0
        for i in range(0, data.shape[0], bs):
            x = data[i:i + bs]
            mk = torch.rand(x.shape, generator=g) < t
            xm = torch.where(mk, torch.full_like(x, m.mask_id), x)
            logits = m.model(xm).float()
            ce = F.cross_entropy(logits.view(-1, logits.shape[-1]), x.view(-1),
                                 reduction="none").view(x.shape)
            mt = mk & (x != m.eos_id)
            ce_sum += ce[mt].double().sum().item()
            n += mt.sum().item()
            nbytes += m.piece_bytes[x[mt]].sum().item()
        res[t] = (ce_sum / max(n, 1), ce_sum / math.log(2) / max(nbytes, 1))
    return res


def layouts(m, val_txt, val_ch, new_len):
    out = {"verse64": T.build_examples(m.sp, val_txt, 64, m.eos_id)[0]}
    for n in sorted({64, new_len}):
        out["passage%d" % n] = T.build_passages(m.sp, val_ch, n, m.eos_id)[0]
    return out


# ---------------------------------------------------------------------------------------------
# 2. generation with unmask
# ---------------------------------------------------------------------------------------------

def prompts_from(val_txt):
    picked = [val_txt[k * len(val_txt) // N_PROMPTS] for k in range(N_PROMPTS)]
    out = []
    for v in picked:
        w = v.split()
        out.append(" ".join(w[:max(3, len(w) // 3)]))
    return out


def run_unmask(binary, d, prompt, extra=()):
    cmd = [binary, "-m", d, "--format", "json", "-q"] + list(extra) + [prompt]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(os.environ, LC_ALL="C"))
    if res.returncode != 0:
        sys.exit("error: %s failed (exit %d): %s" % (" ".join(cmd), res.returncode,
                                                    res.stderr.decode(errors="replace")))
    return json.loads(res.stdout.decode("utf-8"))


def words(text):
    return WORD_RE.findall(text)


def gen_metrics(answers, vocab, eos_flags):
    ws = [words(a) for a in answers]
    n_words = sum(len(w) for w in ws)
    in_vocab = sum(1 for w in ws for x in w if x.lower() in vocab)
    all_bi, bi_tot, bi_within = set(), 0, 0
    q_tot = q_rep = 0
    for w in ws:
        lw = [x.lower() for x in w]
        bis = list(zip(lw, lw[1:]))
        bi_tot += len(bis)
        bi_within += len(set(bis))
        all_bi.update(bis)
        seen = set()
        for q in zip(lw, lw[1:], lw[2:], lw[3:]):
            q_tot += 1
            if q in seen:
                q_rep += 1
            seen.add(q)
    return {
        "mean_words": n_words / len(answers),
        "min_words": min(len(w) for w in ws),
        "vocab_share": in_vocab / max(n_words, 1),
        "distinct2_all": len(all_bi) / max(bi_tot, 1),
        "distinct2_within": bi_within / max(bi_tot, 1),
        "rep4": q_rep / max(q_tot, 1),
        "eos_share": sum(eos_flags) / len(answers),
    }


# ---------------------------------------------------------------------------------------------
# 3. decoding order (torch replay of the LLaDA block loop)
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def replay(m, prompt_ids, gen_length, steps, block_length):
    """LLaDA low-confidence greedy loop with unmask's early stop; returns (answer ids, commit step
    of each answer position (-1: filled by the early stop), per-step committed positions, per-step
    block start)."""
    nblocks = gen_length // block_length
    spb = steps // nblocks
    P = len(prompt_ids)
    x = torch.tensor([prompt_ids + [m.mask_id] * gen_length], dtype=torch.long)
    when = [-1] * gen_length
    log = []
    step = 0
    for b in range(nblocks):
        lo, hi = P + b * block_length, P + (b + 1) * block_length
        n = block_length
        counts = [n // spb + (1 if i < n % spb else 0) for i in range(spb)]
        for k in counts:
            if k == 0:
                continue
            logits = m.model(x).float()
            logits[..., m.mask_id] = -float("inf")
            p = logits.softmax(-1)
            x0 = p.argmax(-1)
            conf = p.gather(-1, x0[..., None])[..., 0][0]
            masked = x[0] == m.mask_id
            conf = torch.where(masked, conf, torch.full_like(conf, -float("inf")))
            conf[hi:] = -float("inf")
            conf[:lo] = -float("inf")
            # highest confidence first, ties to the lowest position
            order = sorted(range(lo, hi), key=lambda i: (-conf[i].item(), i))[:k]
            for i in order:
                x[0, i] = x0[0, i]
                when[i - P] = step
            log.append((sorted(order), lo, hi, [i for i in range(lo, hi) if masked[i].item()]))
            step += 1
            ans = x[0, P:].tolist()
            if m.eos_id in ans:
                e = ans.index(m.eos_id)
                if m.mask_id not in ans[:e]:
                    return ans, when, log
    return x[0, P:].tolist(), when, log


def order_stats(runs, block_length):
    steps = non_left = 0
    pairs = inv = 0
    tokens = 0
    for ans, when, log in runs:
        for committed, lo, hi, masked_before in log:
            steps += 1
            tokens += len(committed)
            if committed != masked_before[:len(committed)]:
                non_left += 1
        for b0 in range(0, len(when), block_length):
            w = [s for s in when[b0:b0 + block_length] if s >= 0]
            for i in range(len(w)):
                for j in range(i + 1, len(w)):
                    if w[i] != w[j]:
                        pairs += 1
                        inv += w[j] < w[i]
    return {"tokens_per_step": tokens / max(steps, 1), "non_leftmost": non_left / max(steps, 1),
            "inversions": inv / max(pairs, 1)}


def text_upto_eos(m, ids):
    stops = {m.eos_id}
    out = []
    for i in ids:
        if i in stops:
            break
        out.append(i)
    return out


# ---------------------------------------------------------------------------------------------

def time_to_text(binary, d, n=10):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([binary, "-m", d, "-q", TIME_PROMPT], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), max(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="old model directory (e.g. a copy of main's models/)")
    ap.add_argument("--new", required=True, help="new model directory")
    ap.add_argument("--unmask", default=os.path.join(ROOT, "build", "unmask"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-md", default=None, help="also write the markdown report here")
    ap.add_argument("--update-readme", default=None, metavar="README",
                    help="replace the section between the eval_default.py markers of this file")
    ap.add_argument("--skip-time", action="store_true")
    ap.add_argument("--old-label", default="the previous bundled model, `models/` as of commit a8cc81b",
                    help="how the report names the old model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not os.access(args.unmask, os.X_OK):
        sys.exit("error: no unmask binary at %s (build it or pass --unmask)" % args.unmask)

    verses = T.extract_corpus()
    train_txt, val_txt = T.split_corpus(verses)
    _, val_ch = T.split_chapters(verses)
    vocab = {w.lower() for t in train_txt for w in words(t)}
    old, new = Loaded(args.old), Loaded(args.new)
    same_tok = old.tok_blob == new.tok_blob
    names = [("old", old), ("new", new)]

    # 1. CE
    ce = {}
    for tag, m in names:
        for lay, data in layouts(m, val_txt, val_ch, new.train_len).items():
            ce[(tag, lay)] = masked_ce(m, data)
            print("CE %s %-11s %s" % (tag, lay, " ".join("t=%.2f %.4f nats (%.4f bits/char)" % (t, a, b)
                                                          for t, (a, b) in ce[(tag, lay)].items())),
                  flush=True)
    lays = ["verse64", "passage64"] + (["passage%d" % new.train_len] if new.train_len != 64 else [])

    # 2. generation with unmask
    prompts = prompts_from(val_txt)
    gen = {}
    for tag, m in names:
        answers, eos, tool_ids, secs = [], [], [], []
        for pr in prompts:
            j = run_unmask(args.unmask, m.dir, pr)
            answers.append(j["text"])
            eos.append(m.eos_id in j["ids"])
            tool_ids.append(j["ids"])
            secs.append(j["stats"]["seconds"])
        gen[tag] = dict(gen_metrics(answers, vocab, eos), answers=answers, tool_ids=tool_ids,
                        gen_seconds=statistics.median(secs))
        print("gen %s %s" % (tag, {k: v for k, v in gen[tag].items() if k not in ("answers", "tool_ids")}),
              flush=True)

    # 3. decoding order
    order = {}
    for tag, m in names:
        d = m.defaults
        runs, match = [], 0
        for pr, tids in zip(prompts, gen[tag]["tool_ids"]):
            r = replay(m, m.sp.encode(pr), d["gen_length"], d["steps"], d["block_length"])
            runs.append(r)
            match += text_upto_eos(m, r[0]) == text_upto_eos(m, tids)
        order[tag] = dict(order_stats(runs, d["block_length"]), match=match)
        print("order %s %s" % (tag, order[tag]), flush=True)

    # 4. time to text
    tt = {}
    if not args.skip_time:
        for tag, m in names:
            tt[tag] = time_to_text(args.unmask, m.dir)
            print("time %s median %.3f s, max %.3f s" % (tag, tt[tag][0], tt[tag][1]), flush=True)

    # 5. showcase
    show = {(tag, pr): run_unmask(args.unmask, m.dir, pr)["text"] for tag, m in names for pr in SHOWCASE}

    md = report(args, old, new, same_tok, ce, lays, gen, order, tt, show, prompts)
    print(md)
    if args.out_md:
        with open(args.out_md, "w") as f:
            f.write(md)
    if args.update_readme:
        txt = open(args.update_readme).read()
        a, b = txt.find(BEGIN), txt.find(END)
        if a < 0 or b < a:
            sys.exit("error: %s has no %s ... %s section" % (args.update_readme, BEGIN, END))
        txt = txt[:a] + BEGIN + "\n" + md + END + txt[b + len(END):]
        with open(args.update_readme, "w") as f:
            f.write(txt)
        print("updated %s" % args.update_readme)


def settings(m):
    d = m.defaults
    return "gen %d / steps %d / block %d" % (d["gen_length"], d["steps"], d["block_length"])


def report(args, old, new, same_tok, ce, lays, gen, order, tt, show, prompts):
    L = []
    w = L.append
    w("## Comparison with the previous model\n")
    w("Measured by `/usr/bin/python3 scripts/eval_default.py --old OLD --new models` (OLD: %s; the"
      % args.old_label)
    w("script's header gives every definition).")
    w("Held-out split: every 50th chapter (23 chapters, 705 verses), unseen by tokenizer and model.")
    w("Tokenizers: %s.\n" % ("byte-identical, so nats per token compare directly" if same_tok else
                             "different: compare bits per character"))
    w("Validation masked cross-entropy on verse tokens (EOS excluded), nats per token (bits per "
      "character in brackets); lower is better:\n")
    w("| layout | t | previous model | this model |")
    w("|---|---|---|---|")
    for lay in lays:
        for t in TS:
            o, n = ce[("old", lay)][t], ce[("new", lay)][t]
            cells = ["%.3f (%.3f)" % o, "%.3f (%.3f)" % n]
            cells[0 if o[0] < n[0] else 1] = "**%s**" % cells[0 if o[0] < n[0] else 1]
            w("| %s | %.2f | %s | %s |" % (lay, t, cells[0], cells[1]))
    w("")
    w("Generation with `unmask` at each model's defaults (greedy) on %d held-out verse prefixes "
      "(verse k·705/50 of the split, its first third of words, at least 3):\n" % len(prompts))
    w("| | previous model | this model |")
    w("|---|---|---|")
    w("| defaults (`unmask_defaults`) | %s | %s |" % (settings(old), settings(new)))
    rows = [("mean answer length, words", "mean_words", "%.1f"),
            ("shortest answer, words", "min_words", "%d"),
            ("words in the corpus vocabulary", "vocab_share", "pct"),
            ("distinct-2 over all answers (higher: less repetition)", "distinct2_all", "%.3f"),
            ("distinct-2 within answers", "distinct2_within", "%.3f"),
            ("repeated 4-grams within answers (lower: less repetition)", "rep4", "pct"),
            ("answers ending with EOS (chapter end)", "eos_share", "pct")]
    for label, k, f in rows:
        fmt = (lambda v: "%.1f%%" % (100 * v)) if f == "pct" else (lambda v, f=f: f % v)
        w("| %s | %s | %s |" % (label, fmt(gen["old"][k]), fmt(gen["new"][k])))
    w("| tokens committed per step | %.2f | %.2f |" % (order["old"]["tokens_per_step"],
                                                      order["new"]["tokens_per_step"]))
    w("| steps committing other than the leftmost masked positions of the block | %.1f%% | %.1f%% |"
      % (100 * order["old"]["non_leftmost"], 100 * order["new"]["non_leftmost"]))
    w("| inverted pairs within a block (0: left to right) | %.1f%% | %.1f%% |"
      % (100 * order["old"]["inversions"], 100 * order["new"]["inversions"]))
    w("| torch replay of the loop equal to unmask's answer | %d/%d | %d/%d |"
      % (order["old"]["match"], len(prompts), order["new"]["match"], len(prompts)))
    w("| median decoding time (stats.seconds) | %.3f s | %.3f s |" % (gen["old"]["gen_seconds"],
                                                                    gen["new"]["gen_seconds"]))
    if tt:
        w("| time to text, `unmask \"%s\"` incl. loading (median of 10, max) | %.2f s (%.2f) | %.2f s (%.2f) |"
          % (TIME_PROMPT, tt["old"][0], tt["old"][1], tt["new"][0], tt["new"][1]))
    w("")
    w("## Sample output\n")
    w("Greedy decoding at the defaults, printed by `unmask \"PROMPT\"` on the CPU backend:\n")
    w("| prompt | model | continuation |")
    w("| --- | --- | --- |")
    for pr in SHOWCASE:
        for tag, label in (("new", "this model"), ("old", "previous")):
            w("| %s | %s | %s |" % (pr, label, show[(tag, pr)].replace("|", "\\|").replace("\n", " ")))
    w("")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
