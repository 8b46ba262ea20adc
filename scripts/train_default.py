#!/usr/bin/python3
"""Train the small default masked-diffusion (LLaDA-style) model bundled with unmask.

Interpreter: /usr/bin/python3 (Debian), using only Debian packages:
    apt-get install python3-torch python3-numpy python3-sentencepiece bible-kjv
(developed with python3-torch 1.13, python3-numpy 1.24, python3-sentencepiece 0.1.97).
No other Python packages and no network access are needed.

Pipeline
  1. Corpus: the King James Bible from the Debian package bible-kjv
     (`bible -f Gen1:1-Rev22:21`, 31,102 verses, one per line). The verse
     reference ("Ge1:1 ") is stripped. Every 50th chapter (chapters 50, 100,
     ... in canonical order) is held out as the validation split.
  2. Tokenizer: sentencepiece BPE, vocab 4096, byte_fallback, trained on the
     training split only, num_threads=1, no input shuffling, no BOS/EOS/PAD
     meta pieces. Piece ids: 0 = <unk>, 1 = <|mdm_mask|>, 2 = <|endoftext|>
     (user_defined_symbols), 3..258 = byte pieces <0x00>..<0xFF>.
  3. Examples: passages. For every training verse, the L tokens (L = 128)
     that start at its boundary and run on through the following verses of
     its chapter (verses tokenized one by one and concatenated). A chapter
     ends with one <|endoftext|>; a passage that reaches it is filled with
     <|endoftext|> up to L (LLaDA's SFT padding), so EOS means "the chapter
     ends here". Every example starts at a verse boundary, so a verse prefix
     is an in-distribution prompt and the answer runs on for a verse or more.
     A share of the batches (crop_frac) is cut to a random length in
     [16, L), so canvases shorter than L (prompt + answer) that end mid-text
     are in distribution.
  4. Model: LLaDA architecture (pre-norm, RMSNorm, RoPE rotate-half, SwiGLU,
     no biases, bidirectional attention, output head tied to the embedding),
     written in plain torch. Objective: LLaDA pre-training loss; per sequence
     t ~ U(1e-3, 1), every token masked independently with probability t,
     loss = sum over masked tokens of CE / t, divided by batch * length.
     AdamW, linear warmup + cosine decay, gradient clipping at 1.0.
     Validation: masked CE on the held-out chapters at t = 0.25/0.5/0.75 in
     the previous model's layout (verse64) and in passages (passage64, passageL).
  5. Output (DIR): config.json (LLaDA keys + "unmask_defaults"),
     model.safetensors (BF16, written byte-deterministically by this script),
     tokenizer.model, README.md (provenance, command, metrics).

Reproducibility: for a given --seed, --threads and device the outputs are
byte-identical across runs (torch.use_deterministic_algorithms, explicit
torch.Generator for batching/masking, sorted safetensors header). The step
count never depends on the wall clock: --minutes is turned into steps with a
fixed reference throughput measured once on the development machine
(REF_STEPS_PER_MIN below), so the same command always trains the same number
of steps; --steps overrides it. OpenBLAS's kernel is named from the CPU flags
(see _openblas_coretype), so machines of one CPU family compute the same bits.
--hp KEY=VALUE overrides one entry of the FULL/QUICK table (the experiments
of issue 17 were run that way; the README records the command).

Usage
  /usr/bin/python3 scripts/train_default.py            # full run -> models/
  /usr/bin/python3 scripts/train_default.py --quick    # ~minutes -> build/quick-model/
  /usr/bin/python3 scripts/train_default.py --sample models "And God said"
  /usr/bin/python3 scripts/eval_default.py --old OLD_DIR --new models --update-readme models/README.md
                                           # comparison with OLD_DIR + samples into the README
"""

import argparse
import io
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import time


def _pin_native_threads():
    """Set BLAS/OpenMP thread counts from --threads BEFORE torch is imported.

    Debian's torch uses OpenBLAS (pthreads), which ignores torch.set_num_threads
    and would otherwise start one thread per core."""
    n = "1"
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            n = sys.argv[i + 1]
        elif a.startswith("--threads="):
            n = a.split("=", 1)[1]
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = n


def _openblas_coretype():
    """Pick OpenBLAS's kernel from the CPU flags when OPENBLAS_CORETYPE is unset.

    Debian 12's OpenBLAS (0.3.21) does not recognise some newer CPUs (e.g. the
    development VM's "Intel(R) Xeon(R) Processor" with AVX-512) and falls back
    to its Prescott (SSE3) kernels, about 4x slower: 8 vs 33 GFLOP/s on one
    thread for the model's matmuls. Naming the kernel family from the flags
    fixes that and makes the kernel, hence the bits of the result, the same on
    every machine of that family."""
    if os.environ.get("OPENBLAS_CORETYPE"):
        return
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), [])
    except OSError:
        return
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= set(flags):
        os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
    elif {"avx2", "fma"} <= set(flags):
        os.environ["OPENBLAS_CORETYPE"] = "Haswell"


_pin_native_threads()
_openblas_coretype()

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

MASK_PIECE = "<|mdm_mask|>"
EOS_PIECE = "<|endoftext|>"

# Reference throughput of each configuration (1 thread, development machine:
# 2-core VM, other jobs running). Used only to turn --minutes into a fixed step
# count; it is a constant on purpose.
REF_STEPS_PER_MIN = {"full": 45.0, "quick": 200.0}

# seq_len: packed passage length (tokens); crop_frac: share of batches cut to a
# random shorter length (so canvases shorter than seq_len, like a prompt plus
# the default answer, are in distribution); tie: output head = embedding.
# Chosen by short runs (600 steps, validation CE; see models/README.md):
# passages of 128 over 256, tied head, lr 1e-3 over 5e-4/2e-3/4e-3, 4 x 192 over
# 6 x 160, no crops. The width/depth is bounded by unmask's time to text (< 1 s
# on the 2-core CPU at the defaults), not by the 20 MB size limit.
FULL = dict(d_model=192, n_heads=4, n_kv_heads=4, n_layers=4, mlp_hidden_size=512,
            seq_len=128, batch_size=32, lr=1e-3, minutes=100.0, tie=True, crop_frac=0.0,
            warmup_frac=0.05, min_lr_ratio=0.1, weight_decay=0.1)
QUICK = dict(d_model=64, n_heads=2, n_kv_heads=2, n_layers=2, mlp_hidden_size=176,
             seq_len=128, batch_size=16, lr=3e-3, minutes=2.0, tie=True, crop_frac=0.0,
             warmup_frac=0.05, min_lr_ratio=0.1, weight_decay=0.1)

VOCAB_SIZE = 4096
ROPE_THETA = 10000.0
RMS_EPS = 1e-5
MAX_SEQ_LEN = 512
# Semi-autoregressive blocks of 4 tokens: with a single 64-token block the
# low-confidence rule commits the EOS fill first (it is the most confident
# prediction everywhere) and answers come out one or two words long.
UNMASK_DEFAULTS = {"gen_length": 64, "steps": 32, "block_length": 16}


README_TEMPLATE = """# unmask default model

A small masked-diffusion language model (LLaDA architecture and objective)
trained from scratch on the King James Bible, bundled so that `unmask` works
out of the box. It is a toy: it continues a verse prefix in KJV style for
about 50 words, running on across verses.

## Provenance

- Corpus: King James Version, from the Debian package `bible-kjv`
  (`bible -f Gen1:1-Rev22:21`, 31,102 verses in 1,189 chapters). The KJV text is
  in the public domain. Verse references are stripped. Validation split: every
  50th chapter in canonical order (chapters 50, 100, ..., 1150: {n_val_ch}
  chapters, {n_val} verses), held out from the tokenizer and the model;
  {n_train} verses in {n_train_ch} chapters train.
- Produced by `scripts/train_default.py` (this repository), plain PyTorch
  {torch_version} on `/usr/bin/python3`, no pretrained weights.
- Training command: `{cmd}`
- Device: {device} ({threads} thread(s)); the shipped weights were produced on {device}.
- Seed: {seed}. The run is deterministic: the same command on the same
  device/thread count gives byte-identical files.

## Model

| | |
|---|---|
| architecture | LLaDA (pre-norm, RMSNorm, RoPE rotate-half, SwiGLU, bidirectional attention, no biases) |
| d_model / layers / heads / kv heads | {d_model} / {n_layers} / {n_heads} / {n_kv_heads} |
| mlp_hidden_size | {mlp} |
| vocab | {vocab} (sentencepiece BPE, byte fallback) |
| output head | {head} |
| parameters | {n_params:,} ({n_body:,} without the embedding and head) |
| dtype on disk | bfloat16 |
| model dir size | {size:,} bytes (config.json + model.safetensors + tokenizer.model) |
| special ids | `<unk>` 0, `<|mdm_mask|>` {mask_id}, `<|endoftext|>` {eos_id} (no BOS) |

Training examples are **passages**: for every training verse, the {L} tokens
that start at its boundary and run on through the following verses of the
same chapter ({n_examples} examples, overlapping). A chapter ends with
`<|endoftext|>`; a passage that reaches it ({n_end} of them) is filled with
`<|endoftext|>` up to {L} tokens, so the model emits EOS where a chapter ends
and otherwise keeps writing ({text_pct:.1f}% of the training tokens are text).
Every example starts at a verse boundary, so a verse prefix is an
in-distribution prompt.{crop_note} `unmask_train_seq_len` is {L}; RoPE
allows longer inputs (`max_sequence_length` {max_seq}), but the model has seen
no position beyond {L}. Generated text ends at the first `<|endoftext|>`.

## Training

- Objective: LLaDA pre-training loss; per sequence t ~ U(0.001, 1), each token
  masked with probability t, loss = sum(CE/t over masked tokens) / (batch * length).
- AdamW (betas 0.9/0.95, weight decay {wd} on matrices), peak lr {lr},
  {warmup} warmup steps, cosine decay to {min_ratio:g} of the peak, grad clip 1.0.
- Steps: {steps} (batch {B} x up to {L} tokens; a fixed count, derived
  from --minutes with a constant reference throughput, not the clock).
- Tokens seen: {n_tokens:,} (EOS fill included), about {epochs_text:.0f} passes
  over the training text.
- Wall time: training {train_min:.1f} min, whole script {wall_min:.1f} min.

## Validation

Mean cross-entropy (nats per token) over masked tokens of the held-out
chapters, every token masked independently with probability t (fixed masking
seed 1234), computed with the bf16 weights as shipped. Layouts: `verse64` is
the previous model's layout (each held-out verse alone, EOS fill to 64
tokens); `passageN` is a passage of N tokens from every held-out verse
boundary (this model's layout).

| layout | t | masked CE, all positions | masked CE, verse tokens only (EOS excluded) |
|---|---|---|---|
{ev_lines}

## Defaults for the unmask CLI

`config.json` carries `"unmask_defaults": {defaults}`
(gen_length, steps, block_length), which the CLI uses for this model: a
{gen}-token answer in blocks of {block} tokens, {dsteps} steps in all.

<!-- eval_default.py: begin -->
(`/usr/bin/python3 scripts/eval_default.py --new models --old OLD_DIR --update-readme models/README.md`
fills in this section: the comparison with the previous model and sample answers.)
<!-- eval_default.py: end -->
"""

def log(msg):
    print(msg, flush=True)


# ----------------------------------------------------------------------------
# Corpus
# ----------------------------------------------------------------------------

REF_RE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")


def extract_corpus():
    """Return a list of (chapter_index, verse_text) in canonical order."""
    if shutil.which("bible") is None:
        sys.exit("error: the `bible` command was not found. Install the corpus with:\n"
                 "    apt-get install bible-kjv")
    env = dict(os.environ, LC_ALL="C")
    res = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, check=False)
    if res.returncode != 0:
        sys.exit("error: `bible -f Gen1:1-Rev22:21` failed: " + res.stderr.decode(errors="replace"))
    verses = []
    chapter = -1
    last = None
    for line in res.stdout.decode("utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        m = REF_RE.match(line)
        if not m:
            sys.exit("error: unexpected line from `bible`: %r" % line)
        key = (m.group(1), m.group(2))
        if key != last:
            chapter += 1
            last = key
        text = " ".join(m.group(4).split())
        verses.append((chapter, text))
    if len(verses) != 31102:
        sys.exit("error: expected 31102 verses from bible-kjv, got %d" % len(verses))
    return verses


def is_validation_chapter(c):
    return (c + 1) % 50 == 0


def split_corpus(verses):
    train = [t for c, t in verses if not is_validation_chapter(c)]
    val = [t for c, t in verses if is_validation_chapter(c)]
    return train, val


def split_chapters(verses):
    """(train, val) as lists of chapters, each a list of verse texts, canonical order."""
    chapters = {}
    for c, t in verses:
        chapters.setdefault(c, []).append(t)
    train = [chapters[c] for c in sorted(chapters) if not is_validation_chapter(c)]
    val = [chapters[c] for c in sorted(chapters) if is_validation_chapter(c)]
    return train, val


# ----------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------

def train_tokenizer(train_texts):
    import sentencepiece as spm
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(train_texts),
        model_writer=buf,
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        character_coverage=1.0,
        byte_fallback=True,
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        max_sentence_length=16384,
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
        user_defined_symbols=[MASK_PIECE, EOS_PIECE],
        minloglevel=2,
    )
    blob = buf.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=blob)
    return blob, sp


# ----------------------------------------------------------------------------
# Model (LLaDA architecture)
# ----------------------------------------------------------------------------

class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_cos_sin(n, head_dim, theta, device):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    pos = torch.arange(n, dtype=torch.float32, device=device)
    freqs = pos[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, hd = cfg["d_model"], cfg["d_model"] // cfg["n_heads"]
        kv = cfg["n_kv_heads"] * hd
        self.n_heads, self.n_kv, self.hd = cfg["n_heads"], cfg["n_kv_heads"], hd
        self.attn_norm = RMSNorm(d, cfg["rms_norm_eps"])
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, kv, bias=False)
        self.v_proj = nn.Linear(d, kv, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_norm = RMSNorm(d, cfg["rms_norm_eps"])
        self.ff_proj = nn.Linear(d, cfg["mlp_hidden_size"], bias=False)
        self.up_proj = nn.Linear(d, cfg["mlp_hidden_size"], bias=False)
        self.ff_out = nn.Linear(cfg["mlp_hidden_size"], d, bias=False)

    def forward(self, x, cos, sin):
        B, L, _ = x.shape
        n = self.attn_norm(x)
        q = self.q_proj(n).view(B, L, self.n_heads, self.hd).transpose(1, 2)
        k = self.k_proj(n).view(B, L, self.n_kv, self.hd).transpose(1, 2)
        v = self.v_proj(n).view(B, L, self.n_kv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.n_kv != self.n_heads:
            rep = self.n_heads // self.n_kv
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        att = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.hd))
        att = att.softmax(dim=-1)  # bidirectional: no causal mask
        o = torch.matmul(att, v).transpose(1, 2).reshape(B, L, -1)
        h = x + self.attn_out(o)
        m = self.ff_norm(h)
        return h + self.ff_out(F.silu(self.ff_proj(m)) * self.up_proj(m))


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg["embedding_size"], cfg["d_model"])
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg["n_layers"])])
        self.ln_f = RMSNorm(cfg["d_model"], cfg["rms_norm_eps"])
        self.tied = bool(cfg.get("weight_tying", False))
        if not self.tied:
            self.ff_out = nn.Linear(cfg["d_model"], cfg["embedding_size"], bias=False)

    def hidden(self, ids):
        L = ids.shape[1]
        hd = self.cfg["d_model"] // self.cfg["n_heads"]
        cos, sin = rope_cos_sin(L, hd, self.cfg["rope_theta"], ids.device)
        x = self.wte(ids)
        for b in self.blocks:
            x = b(x, cos, sin)
        return self.ln_f(x)

    def head(self, h):
        return F.linear(h, self.wte.weight) if self.tied else self.ff_out(h)

    def forward(self, ids):
        return self.head(self.hidden(ids))


class LLaDAModel(nn.Module):
    """Wrapper so that state_dict() names are exactly LLaDA's (model.transformer.*)."""

    def __init__(self, cfg):
        super().__init__()
        self.model = nn.Module()
        self.model.transformer = Transformer(cfg)

    @property
    def t(self):
        return self.model.transformer

    def forward(self, ids):
        return self.t(ids)


def init_weights(model, n_layers, std=0.02):
    for name, p in model.named_parameters():
        if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
            nn.init.ones_(p)
        elif name.endswith("attn_out.weight") or (".blocks." in name and name.endswith("ff_out.weight")):
            nn.init.normal_(p, 0.0, std / math.sqrt(2 * n_layers))
        else:
            nn.init.normal_(p, 0.0, std)


# ----------------------------------------------------------------------------
# safetensors (deterministic writer / minimal reader)
# ----------------------------------------------------------------------------

def write_safetensors(path, tensors, metadata):
    names = sorted(tensors)
    header = {}
    blobs = []
    off = 0
    for n in names:
        t = tensors[n].detach().to("cpu", torch.float32).to(torch.bfloat16).contiguous()
        b = t.view(torch.int16).numpy().astype("<i2").tobytes()
        header[n] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    header["__metadata__"] = metadata
    hj = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    import numpy as np
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    base = 8 + n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "BF16"
        a, b = info["data_offsets"]
        raw = np.frombuffer(data[base + a:base + b], dtype="<i2").copy()
        out[name] = torch.from_numpy(raw).view(torch.bfloat16).float().reshape(info["shape"])
    return out


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------

def build_passages(sp, chapters, L, eos_id):
    """One example per verse: the passage of L tokens that starts at that verse's
    boundary and runs on through the following verses of its chapter. The chapter
    ends with one <|endoftext|>; a passage that reaches it is filled with
    <|endoftext|> up to L (LLaDA's SFT padding), so EOS means "the chapter ends
    here". Verses are tokenized one by one and concatenated, so every example
    starts exactly like a tokenized verse prefix (the prompt at inference)."""
    rows = []
    n_text = n_end = 0
    for verses in chapters:
        ids, starts = [], []
        for v in verses:
            starts.append(len(ids))
            ids += sp.encode(v)
        ids.append(eos_id)
        for s in starts:
            row = ids[s:s + L]
            if len(row) < L:
                n_end += 1
            n_text += sum(1 for i in row if i != eos_id)
            rows.append(row + [eos_id] * (L - len(row)))
    return torch.tensor(rows, dtype=torch.long), n_end, n_text


def build_examples(sp, texts, L, eos_id):
    rows = []
    n_trunc = 0
    n_text = 0
    for s in texts:
        ids = sp.encode(s)
        if len(ids) > L - 1:
            ids = ids[:L - 1]
            n_trunc += 1
        n_text += len(ids)
        rows.append(ids + [eos_id] * (L - len(ids)))
    return torch.tensor(rows, dtype=torch.long), n_trunc, n_text


def bf16_round_(model):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())


@torch.no_grad()
def evaluate(model, data, mask_id, eos_id, device, ts=(0.25, 0.5, 0.75), seed=1234, bs=64):
    """Mean CE over masked tokens at fixed mask ratio t (fixed masking seed)."""
    model.eval()
    res = {}
    for t in ts:
        g = torch.Generator().manual_seed(seed)
        tot = tot_n = txt = txt_n = 0.0
        for i in range(0, data.shape[0], bs):
            x = data[i:i + bs]
            m = torch.rand(x.shape, generator=g) < t
            xm = torch.where(m, torch.full_like(x, mask_id), x).to(device)
            logits = model(xm).float().cpu()
            ce = F.cross_entropy(logits.view(-1, logits.shape[-1]), x.view(-1),
                                 reduction="none").view(x.shape)
            tot += ce[m].sum().item()
            tot_n += m.sum().item()
            mt = m & (x != eos_id)
            txt += ce[mt].sum().item()
            txt_n += mt.sum().item()
        res[t] = (tot / max(tot_n, 1), txt / max(txt_n, 1))
    model.train()
    return res


# ----------------------------------------------------------------------------
# LLaDA-style sampling (reference decoder, greedy, low-confidence remasking)
# ----------------------------------------------------------------------------

@torch.no_grad()
def generate(model, prompt_ids, mask_id, gen_length, steps, block_length):
    assert gen_length % block_length == 0
    nblocks = gen_length // block_length
    assert steps % nblocks == 0
    spb = steps // nblocks
    x = torch.tensor([prompt_ids + [mask_id] * gen_length], dtype=torch.long)
    P = len(prompt_ids)
    for b in range(nblocks):
        hi = P + (b + 1) * block_length
        n = block_length
        counts = [n // spb + (1 if i < n % spb else 0) for i in range(spb)]
        for k in counts:
            logits = model(x).float()
            p = logits.softmax(-1)
            x0 = p.argmax(-1)
            conf = p.gather(-1, x0[..., None])[..., 0]
            masked = x == mask_id
            conf = torch.where(masked, conf, torch.full_like(conf, -float("inf")))
            conf[:, hi:] = -float("inf")
            if k == 0:
                continue
            idx = conf[0].topk(k).indices
            x[0, idx] = x0[0, idx]
    return x[0, P:].tolist()


def sample_main(model_dir, prompts):
    import sentencepiece as spm
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(model_dir, "tokenizer.model"))
    model = LLaDAModel(cfg)
    sd = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    model.load_state_dict(sd, strict=True)
    model.eval()
    d = cfg.get("unmask_defaults", UNMASK_DEFAULTS)
    for pr in prompts:
        ids = sp.encode(pr)
        out = generate(model, ids, cfg["mask_token_id"], d["gen_length"], d["steps"], d["block_length"])
        if cfg["eos_token_id"] in out:
            out = out[:out.index(cfg["eos_token_id"])]
        print("%s => %s" % (pr, sp.decode(ids + out)), flush=True)


# ----------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------

def parse_hp_overrides(items, hp):
    """--hp KEY=VALUE (experiments): override a FULL/QUICK entry, keeping its type."""
    for it in items or []:
        if "=" not in it:
            sys.exit("error: --hp expects KEY=VALUE, got %r" % it)
        k, v = it.split("=", 1)
        if k not in hp:
            sys.exit("error: --hp: unknown key %r (known: %s)" % (k, ", ".join(sorted(hp))))
        old = hp[k]
        if isinstance(old, bool):
            if v.lower() not in ("0", "1", "true", "false"):
                sys.exit("error: --hp %s: expected true/false" % k)
            hp[k] = v.lower() in ("1", "true")
        else:
            hp[k] = type(old)(v)
    return hp


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--quick", action="store_true", help="tiny model, a few minutes on CPU (pipeline check)")
    ap.add_argument("--out", default=None, help="output dir (default: models/, or build/quick-model with --quick)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=None,
                    help="time budget; converted to a FIXED step count with a constant reference "
                         "throughput (full: %g steps/min, quick: %g steps/min)"
                         % (REF_STEPS_PER_MIN["full"], REF_STEPS_PER_MIN["quick"]))
    ap.add_argument("--steps", type=int, default=None, help="explicit step count (overrides --minutes)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--hp", action="append", metavar="KEY=VALUE",
                    help="override one hyperparameter of the FULL/QUICK table (experiments; "
                         "the README records the command)")
    ap.add_argument("--sample", nargs="+", metavar=("DIR", "PROMPT"),
                    help="do not train; decode PROMPTs with the model in DIR and exit")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    if args.sample:
        if len(args.sample) < 2:
            ap.error("--sample needs DIR and at least one PROMPT")
        sample_main(args.sample[0], args.sample[1:])
        return

    torch.use_deterministic_algorithms(True)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("error: --device cuda requested but CUDA is not available")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    hp = parse_hp_overrides(args.hp, dict(QUICK if args.quick else FULL))
    kind = "quick" if args.quick else "full"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = args.out or (os.path.join(repo, "build", "quick-model") if args.quick
                       else os.path.join(repo, "models"))
    minutes = args.minutes if args.minutes is not None else hp["minutes"]
    steps = args.steps if args.steps is not None else max(1, int(round(minutes * REF_STEPS_PER_MIN[kind])))
    device = torch.device(args.device)
    t_start = time.time()

    # 1. corpus
    verses = extract_corpus()
    train_txt, val_txt = split_corpus(verses)
    train_ch, val_ch = split_chapters(verses)
    log("corpus: %d verses, train %d in %d chapters, validation %d in %d chapters (every 50th chapter)"
        % (len(verses), len(train_txt), len(train_ch), len(val_txt), len(val_ch)))

    # 2. tokenizer
    t0 = time.time()
    sp_blob, sp = train_tokenizer(train_txt)
    mask_id, eos_id = sp.piece_to_id(MASK_PIECE), sp.piece_to_id(EOS_PIECE)
    assert sp.id_to_piece(mask_id) == MASK_PIECE and sp.id_to_piece(eos_id) == EOS_PIECE
    assert sp.get_piece_size() == VOCAB_SIZE
    log("tokenizer: vocab %d, mask id %d, eos id %d (%.1fs)"
        % (sp.get_piece_size(), mask_id, eos_id, time.time() - t0))

    # 3. examples: passages of L tokens starting at every verse boundary
    L = hp["seq_len"]
    train_data, n_end, ntxt = build_passages(sp, train_ch, L, eos_id)
    log("examples: passages of L=%d tokens from each training verse: %d (%d reach their chapter's end), "
        "%.1f%% text tokens (the rest EOS)" % (L, train_data.shape[0], n_end,
                                             100.0 * ntxt / train_data.numel()))
    # validation layouts (same held-out chapters):
    #   verse64     today's: each held-out verse alone, EOS fill to 64 tokens
    #   passageN    a passage of N tokens from each held-out verse boundary
    val_sets = {"verse64": build_examples(sp, val_txt, 64, eos_id)[0]}
    for n in sorted({64, L}):
        val_sets["passage%d" % n] = build_passages(sp, val_ch, n, eos_id)[0]

    # 4. model
    cfg = {
        "model_type": "llada",
        "architectures": ["LLaDAModelLM"],
        "d_model": hp["d_model"],
        "n_heads": hp["n_heads"],
        "n_kv_heads": hp["n_kv_heads"],
        "n_layers": hp["n_layers"],
        "mlp_hidden_size": hp["mlp_hidden_size"],
        "vocab_size": VOCAB_SIZE,
        "embedding_size": VOCAB_SIZE,
        "rope_theta": ROPE_THETA,
        "rms_norm_eps": RMS_EPS,
        "max_sequence_length": MAX_SEQ_LEN,
        "mask_token_id": mask_id,
        "eos_token_id": eos_id,
        "weight_tying": bool(hp["tie"]),
        "include_bias": False,
        "include_qkv_bias": False,
        "rope": True,
        "block_type": "llama",
        "layer_norm_type": "rms",
        "activation_type": "silu",
        "torch_dtype": "bfloat16",
        "unmask_train_seq_len": L,
        "unmask_defaults": dict(UNMASK_DEFAULTS),
    }
    torch.manual_seed(args.seed)
    model = LLaDAModel(cfg)
    init_weights(model, cfg["n_layers"])
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    n_emb = sum(p.numel() for n, p in model.named_parameters() if n.endswith("wte.weight") or
                n == "model.transformer.ff_out.weight")
    log("model: d_model %d, layers %d, heads %d/%d, mlp %d, tied %s, params %d (%d without embedding/head)"
        % (cfg["d_model"], cfg["n_layers"], cfg["n_heads"], cfg["n_kv_heads"],
           cfg["mlp_hidden_size"], cfg["weight_tying"], n_params, n_params - n_emb))

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() < 2 or name.endswith("wte.weight") else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=hp["lr"], betas=(0.9, 0.95), eps=1e-8)
    warmup = max(1, int(hp["warmup_frac"] * steps))
    min_ratio = hp["min_lr_ratio"]

    def lr_at(s):
        if s < warmup:
            return hp["lr"] * (s + 1) / warmup
        pr = (s - warmup) / max(1, steps - warmup)
        return hp["lr"] * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * pr)))

    # 5. train
    B, eps = hp["batch_size"], 1e-3
    g = torch.Generator().manual_seed(args.seed + 1)
    N = train_data.shape[0]
    perm, pos = torch.randperm(N, generator=g), 0
    log("training: %d steps, batch %d x %d tokens, lr %g, warmup %d, crop %.2f, device %s, threads %d"
        % (steps, B, L, hp["lr"], warmup, hp["crop_frac"], args.device, args.threads))
    t_train = time.time()
    ema = None
    n_tokens = 0
    for step in range(steps):
        if pos + B > N:
            perm, pos = torch.randperm(N, generator=g), 0
        x = train_data[perm[pos:pos + B]]
        pos += B
        # a share of the batches is cut to a random length in [16, L): the text then
        # runs to the end of the sequence, as it does in a canvas of prompt + answer
        u = torch.rand(2, generator=g)
        Lb = L
        if u[0].item() < hp["crop_frac"]:
            Lb = 16 + int(u[1].item() * (L - 16))
            x = x[:, :Lb]
        t = eps + (1 - eps) * torch.rand(B, generator=g)
        m = torch.rand(B, Lb, generator=g) < t[:, None]
        xm = torch.where(m, torch.full_like(x, mask_id), x)
        w = (1.0 / t)[:, None].expand(B, Lb)[m]
        xm, m, w, tgt = xm.to(device), m.to(device), w.to(device), x[m].to(device)
        for gp in opt.param_groups:
            gp["lr"] = lr_at(step)
        h = model.t.hidden(xm)[m]                   # only masked positions need logits
        ce = F.cross_entropy(model.t.head(h), tgt, reduction="none")
        loss = (ce * w).sum() / (B * Lb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        n_tokens += B * Lb
        lv = loss.item()
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        if step % 50 == 0 or step == steps - 1:
            el = time.time() - t_train
            log("step %5d/%d  loss %.4f (ema %.4f)  lr %.2e  %.1f steps/min  elapsed %.1f min"
                % (step, steps, lv, ema, lr_at(step), (step + 1) / el * 60, el / 60))
    train_secs = time.time() - t_train

    # 6. evaluate the weights exactly as shipped (bf16-rounded)
    bf16_round_(model)
    evs = {}
    for name, data in val_sets.items():
        evs[name] = evaluate(model, data, mask_id, eos_id, device)
        for t, (a, b) in evs[name].items():
            log("validation %-10s t=%.2f: masked CE %.4f (all positions), %.4f (verse tokens only, EOS excluded)"
                % (name, t, a, b))
    ev = evs["passage%d" % L]

    # 7. write outputs
    os.makedirs(out, exist_ok=True)
    sd = {k: v for k, v in model.state_dict().items()}
    write_safetensors(os.path.join(out, "model.safetensors"), sd, {"format": "pt"})
    with open(os.path.join(out, "tokenizer.model"), "wb") as f:
        f.write(sp_blob)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    wall = time.time() - t_start
    files = ["config.json", "model.safetensors", "tokenizer.model"]
    size = sum(os.path.getsize(os.path.join(out, f)) for f in files)

    cmd = "/usr/bin/python3 scripts/train_default.py" + "".join(
        " " + a if " " not in a else " '%s'" % a for a in sys.argv[1:])
    ev_lines = "\n".join("| %s | %.2f | %.4f | %.4f |" % (name, t, a, b)
                         for name, e in evs.items() for t, (a, b) in e.items())
    facts = dict(
        n_val=len(val_txt), n_val_ch=len(val_ch), n_train=len(train_txt), n_train_ch=len(train_ch),
        torch_version=torch.__version__, cmd=cmd, device=args.device, threads=args.threads,
        seed=args.seed, d_model=cfg["d_model"], n_layers=cfg["n_layers"], n_heads=cfg["n_heads"],
        n_kv_heads=cfg["n_kv_heads"], mlp=cfg["mlp_hidden_size"], vocab=VOCAB_SIZE,
        head="tied to the embedding (`weight_tying: true`)" if cfg["weight_tying"] else
             "untied (`weight_tying: false`)",
        n_params=n_params, n_body=n_params - n_emb, size=size, mask_id=mask_id, eos_id=eos_id,
        L=L, n_examples=N, n_end=n_end, text_pct=100.0 * ntxt / train_data.numel(),
        max_seq=MAX_SEQ_LEN, lr=hp["lr"], warmup=warmup, min_ratio=hp["min_lr_ratio"],
        wd=hp["weight_decay"], steps=steps, B=B,
        n_tokens=n_tokens, epochs_text=n_tokens * ntxt / train_data.numel() / max(1, n_text_tokens(train_ch, sp)),
        train_min=train_secs / 60, wall_min=wall / 60, ev_lines=ev_lines,
        defaults=json.dumps(cfg["unmask_defaults"]), gen=cfg["unmask_defaults"]["gen_length"],
        dsteps=cfg["unmask_defaults"]["steps"], block=cfg["unmask_defaults"]["block_length"],
        crop_note="" if hp["crop_frac"] <= 0 else
        (" %.0f%% of the batches are cut to a random length in [16, %d), so a canvas shorter "
         "than %d tokens (prompt + answer), ending mid-text, is in distribution too."
         % (100.0 * hp["crop_frac"], L, L)))
    log("readme facts: " + json.dumps(facts, sort_keys=True))
    readme = README_TEMPLATE.format(**facts)
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(readme)
    log("wrote %s (%d bytes in model files), wall %.1f min" % (out, size, wall / 60))


def n_text_tokens(chapters, sp):
    return sum(len(sp.encode(v)) for ch in chapters for v in ch)


if __name__ == "__main__":
    main()
