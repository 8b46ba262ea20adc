#!/usr/bin/python3
"""Independent numpy reference for unmask: LLaDA forward (fp64) + sampling loop -> test fixtures.

Interpreter: /usr/bin/python3 (Debian) with the Debian packages python3-numpy and
python3-sentencepiece (developed with numpy 1.24, sentencepiece 0.1.97); the tokenizer corpus
comes from the Debian package bible-kjv (`bible -f Gen1:1-Gen3:24`). No torch, no network.
If started by another python3 that lacks numpy, the script re-executes itself under /usr/bin/python3.

What it writes (default --out tests/fixtures; see tests/fixtures/README.md):
  tiny-f32-gqa/, tiny-bf16-tied/   random-weight models in the LLaDA format (config.json,
                                   model.safetensors, tokenizer.model)
  forward.json                     logits of ragged batches
  pick.json                        single-row pick() results + raw noise values of src/model/rng.h
  generate.json                    whole generations, token for token

Tokenizer: sentencepiece BPE, vocab 400, byte_fallback, identity normalizer (keeps the file at
6 KB instead of 240 KB for the nmt_nfkc charsmap), ids 0 <unk>, 1 <|mdm_mask|>, 2 <|endoftext|>,
3..258 byte pieces. Random weights are scaled for peaky outputs (typical max prob 0.2-0.6); the
EOS head row of tiny-f32-gqa is scaled x2 so that greedy runs sometimes emit EOS.

Decision gaps (min_gap): (a) winner vs runner-up score among the candidates, relative to
max(1, |score|); (b) confidence of the last committed vs the best uncommitted masked position;
(c) threshold cases: min |confidence - threshold|; (d) top-k / top-p boundaries, counted only
where moving the boundary could change the winner.

It shares no code with the C++ side. The forward runs in float64 on the stored weight values
(bf16 widened exactly); pick() receives those logits cast to float32. Every fixture records
"min_gap", the smallest margin of any discrete decision it contains; cases are re-seeded (greedy
cases, where the seed is irrelevant: the next prompt) in a fixed order until min_gap >= GAP_MIN,
so a float32 implementation cannot legitimately disagree.
Reruns are byte-identical (fixed seeds, single-threaded sentencepiece training, sorted keys).

Usage: /usr/bin/python3 scripts/reference.py [--out tests/fixtures]
"""

import os
import sys

try:
    import numpy as np
    import sentencepiece as spm
except ImportError:
    if os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") and \
            os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise

import argparse
import io
import json
import math
import re
import shutil
import struct
import subprocess

GAP_MIN = 2e-4
MASK_PIECE = "<|mdm_mask|>"
EOS_PIECE = "<|endoftext|>"
F32 = np.float32

# ----------------------------------------------------------------------------------------------
# Counter-based noise, bit for bit as src/model/rng.h
# ----------------------------------------------------------------------------------------------

_U = np.uint64


def splitmix64(x):
    """x: uint64 ndarray (wrapping arithmetic)."""
    x = x + _U(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U(30))) * _U(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U(27))) * _U(0x94D049BB133111EB)
    return x ^ (x >> _U(31))


def noise_bits(seed, stream, step, position, index):
    """index: int or int array (vocabulary ids); the rest scalars. Returns uint64 ndarray."""
    with np.errstate(over="ignore"):
        h = splitmix64(np.array([seed], dtype=np.uint64))
        h = splitmix64(h ^ np.array([(stream << 32) | step], dtype=np.uint64))
        lo = (np.uint64(position) << _U(32)) | np.asarray(index, dtype=np.uint64)
        return splitmix64(h ^ lo)


def noise_uniform(bits):
    return ((bits >> _U(40)).astype(np.float64) + 0.5) * (1.0 / 16777216.0)


_libm_log = np.frompyfunc(math.log, 1, 1)


def noise_gumbel(bits):
    # math.log is the C library's log (as std::log in src/model/rng.h); numpy's SIMD log can differ by
    # an ulp.
    return -_libm_log(-_libm_log(noise_uniform(bits))).astype(np.float64)


def _check_rng():
    with np.errstate(over="ignore"):
        got = int(splitmix64(np.array([0], dtype=np.uint64))[0])
    assert got == 0xE220A8397B1DCDAF, hex(got)


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------

def kjv_verses(span, count):
    """The verses of `span` (e.g. Gen1:1-Gen3:24) from Debian's bible-kjv, whitespace collapsed."""
    res = subprocess.run(["bible", "-f", span], stdout=subprocess.PIPE, check=True,
                         env=dict(os.environ, LC_ALL="C"))
    texts = []
    for line in res.stdout.decode("utf-8").splitlines():
        m = re.match(r"^\S+\d+:\d+ (.*)$", line.strip())
        if m:
            texts.append(" ".join(m.group(1).split()))
    assert len(texts) == count, len(texts)
    return texts


def train_tokenizer(vocab_size=400):
    texts = kjv_verses("Gen1:1-Gen3:24", 80)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buf, model_type="bpe",
        vocab_size=vocab_size, character_coverage=1.0, byte_fallback=True, num_threads=1,
        shuffle_input_sentence=False, input_sentence_size=0,
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, normalization_rule_name="identity",
        user_defined_symbols=[MASK_PIECE, EOS_PIECE], minloglevel=2)
    blob = buf.getvalue()
    return blob, spm.SentencePieceProcessor(model_proto=blob)


# ----------------------------------------------------------------------------------------------
# Models: random weights, LLaDA tensor names, safetensors writer
# ----------------------------------------------------------------------------------------------

def to_bf16(a):
    """float64 array -> (uint16 bf16 bits, float64 widened values); round-to-nearest-even via f32."""
    bits = np.ascontiguousarray(a, dtype=F32).view(np.uint32)
    r = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
    r = r.astype(np.uint16)
    return r, (r.astype(np.uint32) << np.uint32(16)).view(F32).astype(np.float64)


def write_safetensors(path, tensors):
    """tensors: name -> (dtype 'F32'|'BF16', shape, raw bytes). Sorted keys, contiguous data."""
    header = {"__metadata__": {"format": "pt"}}
    blobs, off = [], 0
    for name in sorted(tensors):
        dt, shape, raw = tensors[name]
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


MODEL_SPECS = {
    # emb_std / head_std chosen so that the typical max softmax probability is ~0.2-0.6;
    # eos_boost scales the output-head row of <|endoftext|> so greedy runs emit EOS sometimes.
    "tiny-f32-gqa": dict(dtype="F32", d_model=64, n_heads=4, n_kv_heads=2, n_layers=2,
                         mlp_hidden_size=96, pad_rows=8, weight_tying=False,
                         include_qkv_bias=False, emb_std=1.0, head_std=0.5, eos_boost=2.0,
                         seed=1001),
    "tiny-bf16-tied": dict(dtype="BF16", d_model=48, n_heads=3, n_kv_heads=3, n_layers=2,
                           mlp_hidden_size=80, pad_rows=0, weight_tying=True,
                           include_qkv_bias=True, emb_std=0.45, head_std=None, eos_boost=1.0,
                           seed=2002),
}


def store_weights(raw, dtype):
    """float64 tensors -> ({name: (dtype, shape, bytes)} for write_safetensors, {name: the stored
    values widened back to float64}) so the reference computes on exactly what the file holds."""
    stored, wide = {}, {}
    for k, a in raw.items():
        if dtype == "F32":
            a32 = np.ascontiguousarray(a, dtype=F32)
            stored[k] = ("F32", a.shape, a32.astype("<f4").tobytes())
            wide[k] = a32.astype(np.float64)
        else:
            bits, wide[k] = to_bf16(a)
            stored[k] = ("BF16", a.shape, bits.astype("<u2").tobytes())
    return stored, wide


# The block's pieces in float64, shared with reference_families.py (same math, other names).

def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(u, theta):
    """u: [len, heads, D]; positions 0..len-1; rotate-half pairs (i, i + D/2)."""
    n, _, D = u.shape
    inv = theta ** (-(2.0 * np.arange(D // 2)) / D)
    a = np.arange(n, dtype=np.float64)[:, None] * inv[None, :]
    c, s = np.cos(a)[:, None, :], np.sin(a)[:, None, :]
    lo, hi = u[..., :D // 2], u[..., D // 2:]
    return np.concatenate([lo * c - hi * s, hi * c + lo * s], axis=-1)


def attention(q, k, v):
    """q [n, H, D], k/v [n, KV, D]: bidirectional softmax attention with GQA -> [n, H, D]."""
    n, H, D = q.shape
    KV = k.shape[1]
    o = np.empty((n, H, D))
    for h in range(H):
        kv = h // (H // KV)
        s = q[:, h, :] @ k[:, kv, :].T / math.sqrt(D)                   # [n, n], no causal mask
        s = np.exp(s - s.max(axis=1, keepdims=True))
        o[:, h, :] = (s / s.sum(axis=1, keepdims=True)) @ v[:, kv, :]
    return o


def swiglu_mlp(m, gate, up, down):
    gt = m @ gate.T                                                     # [n, mlp]
    with np.errstate(over="ignore"):
        gt = gt / (1.0 + np.exp(-gt))                                   # silu
    return (gt * (m @ up.T)) @ down.T


class Model:
    def __init__(self, name, sp):
        s = MODEL_SPECS[name]
        self.name = name
        V = sp.get_piece_size()
        d, H, KV, L, mlp = s["d_model"], s["n_heads"], s["n_kv_heads"], s["n_layers"], \
            s["mlp_hidden_size"]
        hd = d // H
        emb = V + s["pad_rows"]
        self.cfg = {
            "architectures": ["LLaDAModelLM"], "model_type": "llada",
            "d_model": d, "n_heads": H, "n_kv_heads": KV, "n_layers": L,
            "mlp_hidden_size": mlp, "vocab_size": V, "embedding_size": emb,
            "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "max_sequence_length": 128,
            "mask_token_id": sp.piece_to_id(MASK_PIECE), "eos_token_id": sp.piece_to_id(EOS_PIECE),
            "weight_tying": s["weight_tying"], "include_bias": False,
            "include_qkv_bias": s["include_qkv_bias"],
            # LLaDA's switches: absent, configuration_llada.py's defaults name another model.
            "rope": True, "block_type": "llama", "layer_norm_type": "rms", "activation_type": "silu",
        }
        rng = np.random.Generator(np.random.PCG64(s["seed"]))
        g = 1.5  # matrices ~ N(0, (g/sqrt(in))^2)
        P = "model.transformer."
        raw = {}
        raw[P + "wte.weight"] = rng.standard_normal((emb, d)) * s["emb_std"]
        for i in range(L):
            b = P + "blocks.%d." % i
            raw[b + "attn_norm.weight"] = 1 + 0.1 * rng.standard_normal(d)
            raw[b + "q_proj.weight"] = rng.standard_normal((H * hd, d)) * g / math.sqrt(d)
            raw[b + "k_proj.weight"] = rng.standard_normal((KV * hd, d)) * g / math.sqrt(d)
            raw[b + "v_proj.weight"] = rng.standard_normal((KV * hd, d)) * g / math.sqrt(d)
            if s["include_qkv_bias"]:
                raw[b + "q_proj.bias"] = 0.1 * rng.standard_normal(H * hd)
                raw[b + "k_proj.bias"] = 0.1 * rng.standard_normal(KV * hd)
                raw[b + "v_proj.bias"] = 0.1 * rng.standard_normal(KV * hd)
            raw[b + "attn_out.weight"] = rng.standard_normal((d, H * hd)) * g / math.sqrt(H * hd)
            raw[b + "ff_norm.weight"] = 1 + 0.1 * rng.standard_normal(d)
            raw[b + "ff_proj.weight"] = rng.standard_normal((mlp, d)) * g / math.sqrt(d)
            raw[b + "up_proj.weight"] = rng.standard_normal((mlp, d)) * g / math.sqrt(d)
            raw[b + "ff_out.weight"] = rng.standard_normal((d, mlp)) * g / math.sqrt(mlp)
        raw[P + "ln_f.weight"] = 1 + 0.1 * rng.standard_normal(d)
        if not s["weight_tying"]:
            raw[P + "ff_out.weight"] = rng.standard_normal((emb, d)) * s["head_std"]
        head = raw[P + ("wte.weight" if s["weight_tying"] else "ff_out.weight")]
        head[self.cfg["eos_token_id"]] *= s["eos_boost"]
        self.stored, self.w = store_weights(raw, s["dtype"])

    def write(self, out_dir, tok_blob):
        d = os.path.join(out_dir, self.name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write(json.dumps(self.cfg, indent=2) + "\n")
        write_safetensors(os.path.join(d, "model.safetensors"), self.stored)
        with open(os.path.join(d, "tokenizer.model"), "wb") as f:
            f.write(tok_blob)

    # -- forward (float64) ---------------------------------------------------------------------

    def _rmsnorm(self, x, w):
        return rmsnorm(x, w, self.cfg["rms_norm_eps"])

    def _rope(self, u):
        return rope(u, self.cfg["rope_theta"])

    def _forward_one(self, ids):
        c, w, P = self.cfg, self.w, "model.transformer."
        H, KV = c["n_heads"], c["n_kv_heads"]
        D = c["d_model"] // H
        n = len(ids)
        x = w[P + "wte.weight"][np.asarray(ids)]                        # [n, d]
        for i in range(c["n_layers"]):
            b = P + "blocks.%d." % i
            t = self._rmsnorm(x, w[b + "attn_norm.weight"])
            q = t @ w[b + "q_proj.weight"].T                              # [n, H*D]
            k = t @ w[b + "k_proj.weight"].T                              # [n, KV*D]
            v = t @ w[b + "v_proj.weight"].T
            if c["include_qkv_bias"]:
                q, k, v = q + w[b + "q_proj.bias"], k + w[b + "k_proj.bias"], v + w[b + "v_proj.bias"]
            q = self._rope(q.reshape(n, H, D))
            k = self._rope(k.reshape(n, KV, D))
            v = v.reshape(n, KV, D)
            x = x + attention(q, k, v).reshape(n, H * D) @ w[b + "attn_out.weight"].T
            m = self._rmsnorm(x, w[b + "ff_norm.weight"])
            x = x + swiglu_mlp(m, w[b + "ff_proj.weight"], w[b + "up_proj.weight"],
                               w[b + "ff_out.weight"])
        f = self._rmsnorm(x, w[P + "ln_f.weight"])
        head = w[P + "wte.weight"] if c["weight_tying"] else w[P + "ff_out.weight"]
        return (f @ head.T)[:, :c["vocab_size"]]                          # [n, vocab] float64

    def forward(self, seqs):
        """Ragged batch: list of id lists -> float64 logits [sum(len), vocab]."""
        return np.concatenate([self._forward_one(s) for s in seqs], axis=0)


# ----------------------------------------------------------------------------------------------
# pick: one logits row -> token, prob, margin, entropy (+ the smallest decision gap)
# ----------------------------------------------------------------------------------------------

def _rel(a, b, ref):
    return abs(a - b) / max(1.0, abs(ref))


def pick(l, lu, cfg_scale, T, top_k, top_p, seed, step, position, mask_id, exact_ties_ok=False):
    l = np.asarray(l, dtype=F32).copy()
    if cfg_scale > 0:
        lu = np.asarray(lu, dtype=F32)
        l = lu + F32(cfg_scale + 1) * (l - lu)                            # float32 ops, no FMA
    l[mask_id] = -np.inf
    V = len(l)
    ld = l.astype(np.float64)
    e = np.exp(ld - ld.max())
    p = e / e.sum()
    top2 = np.sort(p)[-2:]
    nz = p[p > 0]
    stats = dict(margin=float(top2[1] - top2[0]), entropy=float(-np.sum(nz * np.log(nz))))
    order = np.lexsort((np.arange(V), -ld))                               # l desc, index asc
    K = len(order) if top_k <= 0 else min(top_k, V)
    kept = order[:K]
    cum = None
    if 0 < top_p < 1:
        pk = e[kept] / e[kept].sum()
        cum = np.concatenate([[0.0], np.cumsum(pk)])                      # cum[j]: before j
        m = int(np.sum(cum[:K] < top_p))
        kept = kept[:m]
    if T == 0:
        score = l
    else:
        g = noise_gumbel(noise_bits(seed, 0, step, position, np.arange(V)))
        score = (l + (float(T) * g).astype(F32)).astype(F32)              # float32 add
    ks = score[kept]
    best = ks.max()
    token = int(kept[ks == best].min())
    sw = float(best)
    others = ks[kept != token]
    if exact_ties_ok:
        others = others[others != best]
    gaps = []
    if len(others):
        gaps.append((sw - float(others.max())) / max(1.0, abs(sw)))
    # Candidate-set boundaries matter only where moving them could change the winner.
    tol = GAP_MIN * max(1.0, abs(sw))
    if top_k > 0 and K < V and np.isfinite(ld[order[K]]):
        if token == order[K - 1] or float(score[order[K]]) >= sw - tol:
            gaps.append(_rel(ld[order[K - 1]], ld[order[K]], ld[order[K - 1]]))
    if cum is not None:
        m = len(kept)
        if m < K and float(score[order[m]]) >= sw - tol:
            gaps.append(cum[m] - top_p)
        if m > 1 and token == order[m - 1]:
            gaps.append(top_p - cum[m - 1])
    return dict(token=token, prob=float(p[token]), **stats,
                gap=min(gaps) if gaps else math.inf)


# ----------------------------------------------------------------------------------------------
# The unmasking loop
# ----------------------------------------------------------------------------------------------

def final_answer(x, P, M, stops, eos):
    """eos_stop: the answer is final once a stop id has no mask before it and the prompt has none
    left (a prompt mask would still be filled).
    -> (the answer with its masks filled with eos, whether masks were left), or (None, False)."""
    ans = x[P:]
    hits = [j for j, t in enumerate(ans) if t in stops]
    if hits and M not in ans[:hits[0]] and M not in x[:P]:
        return [eos if t == M else t for t in ans], M in ans
    return None, False


def generate(model, prompt, G, S, B, T, remasking, cfg_scale, threshold, seed, top_k, top_p,
             eos_stop):
    M, eos = model.cfg["mask_token_id"], model.cfg["eos_token_id"]
    return block_loop(lambda seqs: model.forward(seqs).astype(F32), M, eos, [eos], prompt, G, S,
                      B, T, remasking, cfg_scale, threshold, seed, top_k, top_p, eos_stop)


def block_loop(logits_of, M, eos, stops, prompt, G, S, B, T, remasking, cfg_scale, threshold, seed,
               top_k, top_p, eos_stop):
    """LLaDA's semi-autoregressive loop. logits_of(list of canvases) -> float32 logits of their
    positions, back to back; stops: the ids that end the text (eos fills a finished answer).
    As LLaDA's generate(): every masked position before the current block's end is a candidate,
    the prompt's masks (infilling) and any an earlier block left included; the step counts come
    from the block's own masks at its start; CFG masks only the prompt's non-mask tokens.
    -> (answer ids, forwards, min_gap, stopped early, the prompt with its masks as filled)"""
    P = len(prompt)
    x = list(prompt) + [M] * G
    assert G % B == 0
    nb = G // B
    assert S % nb == 0
    s = S // nb
    step, forwards, min_gap, early = 0, 0, math.inf, False
    for b in range(nb):
        lo, hi = P + b * B, P + (b + 1) * B
        k = sum(1 for i in range(lo, hi) if x[i] == M)
        counts = [k // s + (1 if j < k % s else 0) for j in range(s)]
        for j in range(s):
            masked = [i for i in range(0, hi) if x[i] == M]
            if not masked:
                break
            if cfg_scale > 0:
                u = [M if prompt[i] != M else x[i] for i in range(P)] + x[P:]
                both = logits_of([x, u])
                lc, lu = both[:len(x)], both[len(x):]
                forwards += 2
            else:
                lc, lu = logits_of([x]), None
                forwards += 1
            picks, conf = {}, {}
            for i in masked:
                r = pick(lc[i], None if lu is None else lu[i], cfg_scale, T, top_k, top_p, seed,
                         step, i, M)
                picks[i] = r
                min_gap = min(min_gap, r["gap"])
                if remasking == "low_confidence":
                    conf[i] = r["prob"]
                else:
                    conf[i] = float(noise_uniform(noise_bits(seed, 1, step, i, 0))[0])
            n = counts[j]
            if threshold is not None:
                n = max(n, sum(1 for i in masked if conf[i] >= threshold), 1)
                min_gap = min(min_gap, min(abs(conf[i] - threshold) for i in masked))
            n = min(n, len(masked))
            ranked = sorted(masked, key=lambda i: (-conf[i], i))
            if 0 < n < len(ranked):
                min_gap = min(min_gap, conf[ranked[n - 1]] - conf[ranked[n]])
            for i in ranked[:n]:
                x[i] = picks[i]["token"]
            step += 1
            if eos_stop:
                out, early = final_answer(x, P, M, stops, eos)
                if out is not None:
                    return out, forwards, min_gap, early, x[:P]
    return x[P:], forwards, min_gap, early, x[:P]


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------

def f32list(a):
    """Exact float32 values, each written as the shortest decimal that reads back as that float32
    (at most 9 significant digits; the double nearest to it narrows to the same float32)."""
    return [float(np.format_float_scientific(v, unique=True)) for v in np.asarray(a, dtype=F32)]


def forward_fixtures(models, sp):
    cases = []
    rng = np.random.Generator(np.random.PCG64(77))
    for name in ("tiny-f32-gqa", "tiny-bf16-tied"):
        mdl = models[name]
        M, V = mdl.cfg["mask_token_id"], mdl.cfg["vocab_size"]

        def canvas(text, n_prompt, n_mask, n_tail):
            """prompt tokens, then masks, then committed random tokens, with one mask among them"""
            tail = [int(t) for t in rng.integers(3, V, n_tail)]
            tail[n_tail // 2] = M
            return sp.encode(text)[:n_prompt] + [M] * n_mask + tail

        a = canvas("In the beginning", 3, 2, 2)             # 7 tokens
        bseq = canvas("And God said", 3, 6, 3)              # 12 tokens
        c = [M]                                           # a lone masked token
        for seqs in ([bseq], [a, bseq], [a, bseq, c]):
            lens = [len(q) for q in seqs]
            total = sum(lens)
            starts = np.cumsum([0] + lens[:-1])
            rows = sorted(set([int(st) for st in starts] + [int(st + n - 1) for st, n in
                                                            zip(starts, lens)] +
                              [int(rng.integers(0, total))]))     # each sequence's ends + one
            logits = mdl.forward(seqs)
            cases.append({"model": name, "sequences": seqs, "out_rows": rows,
                          "logits": [[float("%.9g" % v) for v in logits[r]] for r in rows]})
    return {"generator": "scripts/reference.py",
            "note": "logits are the float64 forward restricted to [0, vocab_size), to 9 significant "
                    "digits; rows index the concatenation of all sequences' tokens",
            "cases": cases}


PICK_SPECS = [
    # (name, V, mask_id, T, top_k, top_p, cfg, kind)
    ("t0_plain", 400, 1, 0.0, 0, 1.0, 0.0, "normal"),
    ("t0_tie_lowest_index", 400, 1, 0.0, 0, 1.0, 0.0, "tie"),
    ("t0_mask_is_largest", 400, 1, 0.0, 0, 1.0, 0.0, "mask_max"),
    ("t0_topk1", 400, 1, 0.0, 1, 1.0, 0.0, "normal"),
    ("t0_topk5_topp03", 400, 1, 0.0, 5, 0.3, 0.0, "normal"),
    ("t0_cfg15", 400, 1, 0.0, 0, 1.0, 1.5, "normal"),
    ("t07_plain", 400, 1, 0.7, 0, 1.0, 0.0, "normal"),
    ("t07_topk1", 400, 1, 0.7, 1, 1.0, 0.0, "normal"),
    ("t07_topk5", 400, 1, 0.7, 5, 1.0, 0.0, "normal"),
    ("t07_topk50", 400, 1, 0.7, 50, 1.0, 0.0, "normal"),
    ("t07_topp03", 400, 1, 0.7, 0, 0.3, 0.0, "normal"),
    ("t07_topp09", 400, 1, 0.7, 0, 0.9, 0.0, "normal"),
    ("t07_topk50_topp09", 400, 1, 0.7, 50, 0.9, 0.0, "normal"),
    ("t07_cfg15", 400, 1, 0.7, 0, 1.0, 1.5, "normal"),
    ("t2_plain", 400, 1, 2.0, 0, 1.0, 0.0, "normal"),
    ("t2_topk5", 400, 1, 2.0, 5, 1.0, 0.0, "normal"),
    ("t2_topp09", 400, 1, 2.0, 0, 0.9, 0.0, "normal"),
    ("t2_cfg15_topk50", 400, 1, 2.0, 50, 1.0, 1.5, "normal"),
    ("t2_flat_row", 400, 1, 2.0, 0, 1.0, 0.0, "flat"),
    ("t07_seed_max_u64", 400, 7, 0.7, 0, 1.0, 0.0, "normal"),
    ("wide_t07", 5000, 4321, 0.7, 0, 1.0, 0.0, "normal"),
    ("wide_t0_topk50_topp09", 5000, 4321, 0.0, 50, 0.9, 0.0, "normal"),
]


def pick_fixtures():
    cases = []
    for ci, (name, V, mask_id, T, top_k, top_p, cfg, kind) in enumerate(PICK_SPECS):
        rng = np.random.Generator(np.random.PCG64(500 + ci))
        sd = 0.3 if kind == "flat" else 3.0
        l = rng.standard_normal(V) * sd
        lu = (l + rng.standard_normal(V)) if cfg > 0 else None
        if kind == "tie":
            l[[37, 211]] = l.max() + 1.0                                   # equal float32 maxima
        if kind == "mask_max":
            l[mask_id] = l.max() + 5.0
        l = np.asarray(l, dtype=F32)
        lu = None if lu is None else np.asarray(lu, dtype=F32)
        step, position = int(rng.integers(0, 1000)), int(rng.integers(0, 100000))
        seeds = ([2**64 - 1 - i for i in range(100)] if name == "t07_seed_max_u64"
                 else [int(rng.integers(0, 2**63)) + i for i in range(100)])
        for seed in seeds:
            r = pick(l, lu, cfg, T, top_k, top_p, seed, step, position, mask_id,
                     exact_ties_ok=(kind == "tie"))
            if r["gap"] >= GAP_MIN or T == 0:
                break
        assert r["gap"] >= GAP_MIN, (name, r)
        if kind == "tie":
            assert r["token"] == 37
        cases.append({"name": name, "logits": f32list(l),
                      "uncond_logits": None if lu is None else f32list(lu),
                      "cfg_scale": cfg, "temperature": T, "top_k": top_k, "top_p": top_p,
                      "seed": seed, "step": step, "position": position, "mask_token_id": mask_id,
                      "expected": {k: r[k] for k in ("token", "prob", "margin", "entropy")},
                      "min_gap": r["gap"] if math.isfinite(r["gap"]) else None})
    noise = []
    for seed, stream, step, pos, idx in [(0, 0, 0, 0, 0), (1, 0, 0, 0, 1), (42, 0, 3, 17, 250),
                                         (42, 1, 3, 17, 0), (7, 0, 65535, 127, 126335),
                                         (2**64 - 1, 1, 2**32 - 1, 2**32 - 1, 2**32 - 1),
                                         (123456789012345, 0, 9, 300, 4999)]:
        bits = noise_bits(seed, stream, step, pos, idx)
        noise.append({"seed": seed, "stream": stream, "step": step, "position": pos,
                      "index": idx, "bits": int(bits[0]),
                      "uniform": float(noise_uniform(bits)[0]),
                      "gumbel": float(noise_gumbel(bits)[0])})
    return {"generator": "scripts/reference.py",
            "note": "top_k 0 and top_p 1.0 mean off; min_gap null: a single candidate; "
                    "t0_tie_lowest_index: min_gap ignores the exact tie",
            "splitmix64_of_0": 0xE220A8397B1DCDAF, "noise": noise, "cases": cases}


PROMPTS = ["In the beginning", "And God said", "And the earth", "And God saw the light",
           "And the evening and the morning", "And the LORD God", "And the serpent said",
           "Let there be light"]

GEN_SPECS = [
    # name, G, S, B, T, top_k, top_p, remasking, cfg, threshold, seed, eos_stop, first prompt,
    # infill (None, or (word index, n): that word of the prompt becomes n mask tokens)
    ("g16_s16_b16", 16, 16, 16, 0.0, 0, 1.0, "low_confidence", 0.0, None, 0, False, 0, None),
    ("g24_s12_b8", 24, 12, 8, 0.0, 0, 1.0, "low_confidence", 0.0, None, 0, False, 1, None),
    ("g16_s8_b4", 16, 8, 4, 0.0, 0, 1.0, "low_confidence", 0.0, None, 0, False, 2, None),
    ("cfg1_g16_s8_b8", 16, 8, 8, 0.0, 0, 1.0, "low_confidence", 1.0, None, 0, False, 0, None),
    ("threshold05_g16_s16_b8", 16, 16, 8, 0.0, 0, 1.0, "low_confidence", 0.0, 0.5, 0, False, 1,
     None),
    ("t08_topk20", 16, 16, 16, 0.8, 20, 1.0, "low_confidence", 0.0, None, 7, False, 0, None),
    ("t08_topp09", 16, 16, 16, 0.8, 0, 0.9, "low_confidence", 0.0, None, 7, False, 2, None),
    ("random_remask_g16_s8_b8", 16, 8, 8, 0.0, 0, 1.0, "random", 0.0, None, 1, False, 1, None),
    ("eos_stop_g24_s24_b8", 24, 24, 8, 0.0, 0, 1.0, "low_confidence", 0.0, None, 0, True, 0, None),
    ("k_lt_s_g6_s12_b6", 6, 12, 6, 0.0, 0, 1.0, "low_confidence", 0.0, None, 0, False, 2, None),
    ("cfg15_t07_topk50_topp09", 16, 8, 8, 0.7, 50, 0.9, "low_confidence", 1.5, None, 3, False, 0,
     None),
    # Masks written in the prompt (infilling): candidates beside the block's, on its schedule.
    ("infill_g16_s16_b8", 16, 16, 8, 0.0, 0, 1.0, "low_confidence", 0.0, None, 0, False, 1, (1, 2)),
    ("infill_g8_s4_b8", 8, 4, 8, 0.0, 0, 1.0, "low_confidence", 0.0, None, 0, False, 3, (2, 1)),
    ("infill_g8_s16_b8", 8, 16, 8, 0.0, 0, 1.0, "low_confidence", 0.0, None, 0, False, 4, (0, 2)),
    ("infill_cfg1_g16_s8_b8", 16, 8, 8, 0.0, 0, 1.0, "low_confidence", 1.0, None, 0, False, 5,
     (1, 1)),
    ("infill_threshold05_g16_s16_b8", 16, 16, 8, 0.0, 0, 1.0, "low_confidence", 0.0, 0.5, 0, False,
     6, (2, 3)),
    ("infill_t08_g16_s16_b16", 16, 16, 16, 0.8, 0, 1.0, "low_confidence", 0.0, None, 7, False, 7,
     (1, 2)),
]


def infill_text(text, infill):
    """`text` with word infill[0] replaced by infill[1] mask tokens (the mask's text)."""
    if infill is None:
        return text
    words = text.split(" ")
    words[infill[0]] = MASK_PIECE * infill[1]
    return " ".join(words)


def generate_fixtures(models, sp):
    cases = []
    for name in ("tiny-f32-gqa", "tiny-bf16-tied"):
        mdl = models[name]
        eos = mdl.cfg["eos_token_id"]
        for (cname, G, S, B, T, top_k, top_p, remask, cfg, thr, seed0, eos_stop,
             p0, infill) in GEN_SPECS:
            seed_matters = T > 0 or remask == "random"
            seeds = [seed0 + i for i in range(40)] if seed_matters else [seed0]
            # eos_stop: also search the temperature-0.8 regime when greedy never emits EOS
            temps = [T, 0.8] if eos_stop else [T]
            found = None
            for temp in temps:
                sds = seeds if temp == T else [seed0 + i for i in range(40)]
                for pi in range(len(PROMPTS)):
                    text = infill_text(PROMPTS[(p0 + pi) % len(PROMPTS)], infill)
                    ids = sp.encode(text)
                    M = mdl.cfg["mask_token_id"]
                    assert (M in ids) == (infill is not None), text
                    for seed in sds:
                        out, fw, gap, early, filled = generate(mdl, ids, G, S, B, temp, remask,
                                                               cfg, thr, seed, top_k, top_p,
                                                               eos_stop)
                        # threshold cases: the threshold must matter (some step commits more
                        # than one position, some block needs more than one step)
                        thr_ok = thr is None or G // B < fw < S
                        # infill cases: some prompt mask must be filled
                        infill_ok = infill is None or filled != ids
                        if gap >= GAP_MIN and (not eos_stop or early) and thr_ok and infill_ok:
                            found = (text, ids, seed, temp, out, fw, gap, filled)
                            break
                    if found:
                        break
                if found:
                    break
            assert found, (name, cname)
            text, ids, seed, temp, out, fw, gap, filled = found
            cut = out.index(eos) if eos in out else len(out)
            case = {"name": cname, "model": name, "prompt_text": text, "prompt_ids": ids,
                    "gen_length": G, "steps": S, "block_length": B, "temperature": temp,
                    "top_k": top_k, "top_p": top_p, "remasking": remask,
                    "cfg_scale": cfg, "threshold": thr, "seed": seed, "eos_stop": eos_stop,
                    "expected_ids": out, "expected_text": sp.decode_ids(out[:cut]),
                    "forwards": fw, "min_gap": gap}
            if infill is not None:
                case["expected_filled_prompt_ids"] = filled
            cases.append(case)
    return {"generator": "scripts/reference.py",
            "note": "top_k 0 and top_p 1.0 mean off; threshold null means off; stop ids = "
                    "{eos_token_id}",
            "cases": cases}


def write_json(path, obj, list_keys=("cases",)):
    """One entry per line for the lists named in list_keys (diff-friendly); the rest compact."""
    parts = []
    for k, v in obj.items():
        if k in list_keys:
            body = ",\n".join("  " + json.dumps(c, separators=(",", ":")) for c in v)
            parts.append(json.dumps(k) + ":[\n" + body + "\n]")
        else:
            parts.append(json.dumps(k) + ":" + json.dumps(v, separators=(",", ":")))
    with open(path, "w") as f:
        f.write("{" + ",\n".join(parts) + "}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "tests", "fixtures"))
    ap.add_argument("--stats", action="store_true", help="print peakiness statistics and exit")
    args = ap.parse_args()
    _check_rng()
    if shutil.which("bible") is None:
        sys.exit("error: `bible` not found: apt-get install bible-kjv")
    blob, sp = train_tokenizer()
    models = {n: Model(n, sp) for n in MODEL_SPECS}
    if args.stats:
        for n, mdl in models.items():
            ids = sp.encode("And God said, Let there be light") + [mdl.cfg["mask_token_id"]] * 24
            lg = mdl.forward([ids])
            lg[:, mdl.cfg["mask_token_id"]] = -np.inf
            p = np.exp(lg - lg.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            print(n, "max prob quartiles", np.percentile(p.max(1), [10, 25, 50, 75, 90]).round(3),
                  "argmax", lg.argmax(1).tolist())
        return
    os.makedirs(args.out, exist_ok=True)
    for mdl in models.values():
        mdl.write(args.out, blob)
    write_json(os.path.join(args.out, "forward.json"), forward_fixtures(models, sp))
    write_json(os.path.join(args.out, "pick.json"), pick_fixtures())
    write_json(os.path.join(args.out, "generate.json"), generate_fixtures(models, sp))


if __name__ == "__main__":
    main()
