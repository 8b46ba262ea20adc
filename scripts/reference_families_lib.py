"""Model families for scripts/reference_families.py (see its docstring): byte-level BPE and
sentencepiece tokenizers, random-weight models under the Dream (Qwen2), Llama and LLaDA tensor
names with a float64 forward, Dream-mode pick, the Dream loop and the LLaDA block loop on shifted
or unshifted logits. Independent of the C++ side; shares helpers with scripts/reference.py."""

import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import io
import json
import math

import jinja2.sandbox
import numpy as np
import sentencepiece as spm
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

import reference as ref
from reference import F32, GAP_MIN, noise_bits, noise_gumbel, noise_uniform

# ----------------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------------

QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
            r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
             r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
DREAM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"]
LLADA_SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>", "<|mdm_mask|>"]
# Jinja sources exactly as published (a backslash-n inside the Jinja string literals).
DREAM_TEMPLATE = (r"{% for message in messages %}{% if loop.first and messages[0]['role'] != "
                  r"'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
                  r"{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                  r"'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
                  r"{{ '<|im_start|>assistant\n' }}{% endif %}")
LLADA_TEMPLATE = (r"{% set loop_messages = messages %}{% for message in loop_messages %}"
                  r"{% set content = '<|start_header_id|>' + message['role'] + "
                  r"'<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
                  r"{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
                  r"{{ content }}{% endfor %}{% if add_generation_prompt %}"
                  r"{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


def kjv(span="Gen1:1-Gen11:32"):
    return ref.kjv_verses(span, 299)


def byte_bpe(regex, nfc, vocab_size, specials, texts, ignore_merges):
    """Train a byte-level BPE, rebuild it from its vocab/merges (so the model carries exactly the
    published options), add the special tokens after the BPE vocab. Returns (tokenizer, vocab,
    merges)."""
    def pipeline(model):
        t = Tokenizer(model)
        if nfc:
            t.normalizer = normalizers.NFC()
        t.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        t.decoder = decoders.ByteLevel()
        return t
    t = pipeline(models.BPE())
    t.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    js = json.loads(t.to_str())["model"]
    vocab = js["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in js["merges"]]
    t = pipeline(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
    t.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    for i, s in enumerate(specials):
        assert t.token_to_id(s) == len(vocab) + i
    return t, vocab, merges


class Tok:
    """One interface over a `tokenizers` object or a sentencepiece processor."""

    def __init__(self, hf=None, sp=None, template=None, bos_token=None):
        self.hf, self.sp, self.template, self.bos_token = hf, sp, template, bos_token
        self.size = hf.get_vocab_size(with_added_tokens=True) if hf else sp.get_piece_size()

    def encode(self, text, special=True):
        if self.sp:
            return self.sp.encode(text)
        return self.hf.encode(text, add_special_tokens=special).ids

    def decode(self, ids):
        if self.sp:
            return self.sp.decode_ids(ids)
        return self.hf.decode(ids, skip_special_tokens=False)

    def piece(self, text):
        return self.sp.piece_to_id(text) if self.sp else self.hf.token_to_id(text)

    def piece_text(self, id):
        return self.sp.id_to_piece(id) if self.sp else self.hf.id_to_token(id)

    def render(self, system, user):
        msgs = ([{"role": "system", "content": system}] if system is not None else []) + \
               [{"role": "user", "content": user}]
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        return env.from_string(self.template).render(messages=msgs, add_generation_prompt=True,
                                                     bos_token=self.bos_token)


def added_decoder(tok, specials):
    return {str(tok.token_to_id(s)): {"content": s, "lstrip": False, "normalized": False,
                                      "rstrip": False, "single_word": False, "special": True}
            for s in specials}


def build_tokenizers(texts):
    """-> {model: (Tok, {file name: bytes})}"""
    out = {}
    # Dream: Qwen2 pipeline, shipped as vocab.json + merges.txt + tokenizer_config.json.
    t, vocab, merges = byte_bpe(QWEN2_RE, True, 400, DREAM_SPECIALS, texts, False)
    files = {
        "vocab.json": json.dumps(dict(sorted(vocab.items(), key=lambda kv: kv[1])),
                                 ensure_ascii=False, separators=(",", ":")).encode(),
        "merges.txt": ("#version: 0.2\n" + "".join("%s %s\n" % m for m in merges)).encode(),
        "tokenizer_config.json": jdump({
            "add_bos_token": False, "add_prefix_space": False,
            "added_tokens_decoder": added_decoder(t, DREAM_SPECIALS),
            "additional_special_tokens": DREAM_SPECIALS[1:], "bos_token": None,
            "chat_template": DREAM_TEMPLATE, "clean_up_tokenization_spaces": False,
            "eos_token": "<|endoftext|>", "errors": "replace", "mask_token": "<|mask|>",
            "model_max_length": 128, "pad_token": "<|endoftext|>", "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer", "unk_token": None})}
    # the files must give back the same tokenizer
    t2 = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    t2.normalizer, t2.pre_tokenizer, t2.decoder = t.normalizer, t.pre_tokenizer, t.decoder
    t2.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in DREAM_SPECIALS])
    probe = "And God said, <|im_start|>Let there be 1234 lights!\n\n  <|mask|>caf\u00e9"
    assert t2.encode(probe).ids == t.encode(probe).ids
    out["tiny-dream"] = (Tok(hf=t, template=DREAM_TEMPLATE), files)

    # LLaDA + BPE: Llama-3 style tokenizer.json.
    t, vocab, merges = byte_bpe(LLAMA3_RE, False, 400, LLADA_SPECIALS, texts, True)
    bos = "<|startoftext|>"
    t.post_processor = processors.TemplateProcessing(
        single=bos + " $A", pair=bos + " $A:0 " + bos + ":1 $B:1",
        special_tokens=[(bos, t.token_to_id(bos))])
    tj = t.to_str(pretty=True)
    assert json.loads(tj)["model"]["ignore_merges"] is True
    assert Tokenizer.from_str(tj).encode(probe).ids == t.encode(probe).ids
    files = {"tokenizer.json": (tj + "\n").encode(),
             "tokenizer_config.json": jdump({
                 "added_tokens_decoder": added_decoder(t, LLADA_SPECIALS), "bos_token": bos,
                 "chat_template": LLADA_TEMPLATE, "clean_up_tokenization_spaces": False,
                 "eos_token": "<|endoftext|>", "model_max_length": 128,
                 "pad_token": "<|endoftext|>", "tokenizer_class": "PreTrainedTokenizerFast"})}
    out["tiny-llada-bpe"] = (Tok(hf=t, template=LLADA_TEMPLATE, bos_token=bos), files)

    # Llama: sentencepiece BPE, 0 <unk> 1 <s> 2 </s>, byte_fallback, identity normalizer.
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buf, model_type="bpe", vocab_size=1000,
        character_coverage=1.0, byte_fallback=True, num_threads=1, shuffle_input_sentence=False,
        input_sentence_size=0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        normalization_rule_name="identity", minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    assert sp.get_piece_size() == 1000 and sp.id_to_piece(1) == "<s>"
    assert not sp.is_control(811) and not sp.is_byte(811)
    out["tiny-llama"] = (Tok(sp=sp), {"tokenizer.model": buf.getvalue()})
    return out


def jdump(obj):
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


# ----------------------------------------------------------------------------------------------
# Models: random weights under each family's tensor names; float64 forward
# ----------------------------------------------------------------------------------------------

QWEN2_NAMES = dict(emb="model.embed_tokens.weight", blk="model.layers.%d.",
                   attn_norm="input_layernorm.weight", q="self_attn.q_proj.",
                   k="self_attn.k_proj.", v="self_attn.v_proj.", o="self_attn.o_proj.weight",
                   ffn_norm="post_attention_layernorm.weight", gate="mlp.gate_proj.weight",
                   up="mlp.up_proj.weight", down="mlp.down_proj.weight", norm="model.norm.weight",
                   head="lm_head.weight")
LLADA_NAMES = dict(emb="model.transformer.wte.weight", blk="model.transformer.blocks.%d.",
                   attn_norm="attn_norm.weight", q="q_proj.", k="k_proj.", v="v_proj.",
                   o="attn_out.weight", ffn_norm="ff_norm.weight", gate="ff_proj.weight",
                   up="up_proj.weight", down="ff_out.weight", norm="model.transformer.ln_f.weight",
                   head="model.transformer.ff_out.weight")

SPECS = {
    # emb_std / head_std give peaky outputs (typical max prob 0.2-0.7); stop_boost scales the
    # head rows of the stop ids; padding head rows (ids >= tokenizer size) are scaled x0.1.
    "tiny-dream": dict(names=QWEN2_NAMES, dtype="BF16", d=56, H=7, KV=1, L=2, mlp=48, eps=1e-6,
                       theta=1000000.0, bias=True, shifted=True, emb_std=1.0, head_std=0.5,
                       stop_boost=1.5, seed=3008),
    "tiny-llama": dict(names=QWEN2_NAMES, dtype="BF16", d=24, H=4, KV=2, L=2, mlp=48, eps=1e-5,
                       theta=10000.0, bias=False, shifted=True, emb_std=1.0, head_std=0.5,
                       stop_boost=1.5, seed=4004),
    "tiny-llada-bpe": dict(names=LLADA_NAMES, dtype="BF16", d=48, H=4, KV=4, L=2, mlp=48,
                           eps=1e-5, theta=500000.0, bias=False, shifted=False, emb_std=1.0,
                           head_std=0.5, stop_boost=1.5, seed=5005),
}


def model_ids(name, tok):
    """-> (mask id, stop ids, eos id) as the C++ side must derive them."""
    if name == "tiny-dream":
        return tok.piece("<|mask|>"), sorted([tok.piece("<|endoftext|>"),
                                              tok.piece("<|im_end|>")]), tok.piece("<|endoftext|>")
    if name == "tiny-llama":
        return 811, [2], 2
    return tok.piece("<|mdm_mask|>"), sorted([tok.piece("<|endoftext|>"),
                                              tok.piece("<|eot_id|>")]), tok.piece("<|endoftext|>")


TORCH_DTYPE = {"F32": "float32", "BF16": "bfloat16"}


def make_config(name, s, tok, V):
    M, stops, eos = model_ids(name, tok)
    if name == "tiny-dream":
        return {"architectures": ["DreamModel"], "model_type": "Dream", "hidden_size": s["d"],
                "intermediate_size": s["mlp"], "num_attention_heads": s["H"],
                "num_key_value_heads": s["KV"], "num_hidden_layers": s["L"], "vocab_size": V,
                "rms_norm_eps": s["eps"], "rope_theta": s["theta"],
                "max_position_embeddings": 128, "tie_word_embeddings": False,
                "hidden_act": "silu", "use_sliding_window": False, "sliding_window": None,
                "rope_scaling": None, "attention_dropout": 0.0, "mask_token_id": M,
                "bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos,
                "torch_dtype": TORCH_DTYPE[s["dtype"]]}
    if name == "tiny-llama":
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                "hidden_size": s["d"], "intermediate_size": s["mlp"],
                "num_attention_heads": s["H"], "num_key_value_heads": s["KV"],
                "num_hidden_layers": s["L"], "vocab_size": V, "rms_norm_eps": s["eps"],
                "rope_theta": s["theta"], "max_position_embeddings": 128,
                "tie_word_embeddings": False, "hidden_act": "silu", "attention_bias": False,
                "mlp_bias": False, "rope_scaling": None, "bos_token_id": 1, "eos_token_id": 2,
                "torch_dtype": TORCH_DTYPE[s["dtype"]]}
    return {"architectures": ["LLaDAModelLM"], "model_type": "llada", "d_model": s["d"],
            "n_heads": s["H"], "n_kv_heads": s["KV"], "n_layers": s["L"],
            "mlp_hidden_size": s["mlp"], "vocab_size": V, "embedding_size": V,
            "rope_theta": s["theta"], "rms_norm_eps": s["eps"], "max_sequence_length": 128,
            "mask_token_id": M, "eos_token_id": eos, "pad_token_id": eos,
            "weight_tying": False, "include_bias": False, "include_qkv_bias": False,
            "rope": True, "block_type": "llama", "layer_norm_type": "rms", "activation_type": "silu"}


class Net:
    def __init__(self, name, tok):
        s = self.s = SPECS[name]
        self.name, self.tok, self.shifted = name, tok, s["shifted"]
        self.mask_id, self.stop_ids, self.eos_id = model_ids(name, tok)
        V = self.V = tok.size if name == "tiny-llama" else -(-tok.size // 16) * 16
        self.cfg = make_config(name, s, tok, V)
        d, H, KV, L, mlp = s["d"], s["H"], s["KV"], s["L"], s["mlp"]
        hd, n = d // H, s["names"]
        rng = np.random.Generator(np.random.PCG64(s["seed"]))
        g = 1.5  # matrices ~ N(0, (g/sqrt(in))^2)
        raw = {n["emb"]: rng.standard_normal((V, d)) * s["emb_std"]}
        for i in range(L):
            b = n["blk"] % i
            raw[b + n["attn_norm"]] = 1 + 0.1 * rng.standard_normal(d)
            for key, rows in (("q", H * hd), ("k", KV * hd), ("v", KV * hd)):
                raw[b + n[key] + "weight"] = rng.standard_normal((rows, d)) * g / math.sqrt(d)
                if s["bias"]:
                    raw[b + n[key] + "bias"] = 0.1 * rng.standard_normal(rows)
            raw[b + n["o"]] = rng.standard_normal((d, H * hd)) * g / math.sqrt(H * hd)
            raw[b + n["ffn_norm"]] = 1 + 0.1 * rng.standard_normal(d)
            raw[b + n["gate"]] = rng.standard_normal((mlp, d)) * g / math.sqrt(d)
            raw[b + n["up"]] = rng.standard_normal((mlp, d)) * g / math.sqrt(d)
            raw[b + n["down"]] = rng.standard_normal((d, mlp)) * g / math.sqrt(mlp)
        raw[n["norm"]] = 1 + 0.1 * rng.standard_normal(d)
        head = raw[n["head"]] = rng.standard_normal((V, d)) * s["head_std"]
        head[tok.size:] *= 0.1
        head[self.stop_ids] *= s["stop_boost"]
        self.stored, self.w = ref.store_weights(raw, s["dtype"])

    def write(self, out_dir, files):
        d = os.path.join(out_dir, self.name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "wb") as f:
            f.write(jdump(self.cfg))
        ref.write_safetensors(os.path.join(d, "model.safetensors"), self.stored)
        for fn, blob in files.items():
            with open(os.path.join(d, fn), "wb") as f:
                f.write(blob)

    def _norm(self, x, w):
        return ref.rmsnorm(x, w, self.s["eps"])

    def _rope(self, u):
        return ref.rope(u, self.s["theta"])

    def forward(self, ids):
        """Raw (unshifted) head outputs: float64 [len(ids), V]."""
        s, w, nm = self.s, self.w, self.s["names"]
        H = s["H"]
        D, n = s["d"] // H, len(ids)
        x = w[nm["emb"]][np.asarray(ids)]                                 # [n, d]
        for i in range(s["L"]):
            b = nm["blk"] % i
            t = self._norm(x, w[b + nm["attn_norm"]])
            qkv = []
            for key in "qkv":
                y = t @ w[b + nm[key] + "weight"].T                       # [n, heads*D]
                if s["bias"]:
                    y = y + w[b + nm[key] + "bias"]
                qkv.append(y.reshape(n, -1, D))
            q, k, v = self._rope(qkv[0]), self._rope(qkv[1]), qkv[2]
            x = x + ref.attention(q, k, v).reshape(n, H * D) @ w[b + nm["o"]].T
            m = self._norm(x, w[b + nm["ffn_norm"]])
            x = x + ref.swiglu_mlp(m, w[b + nm["gate"]], w[b + nm["up"]], w[b + nm["down"]])
        return self._norm(x, w[nm["norm"]]) @ w[nm["head"]].T             # [n, V]

    def logits(self, ids):
        """float32 logits used for each canvas position (shifted for Dream / Llama)."""
        raw = self.forward(ids)
        if self.shifted:
            raw = np.concatenate([raw[:1], raw[:-1]], axis=0)
        return raw.astype(F32)


# ----------------------------------------------------------------------------------------------
# Dream-mode pick
# ----------------------------------------------------------------------------------------------

STATS = ("prob", "margin", "entropy")


def pick_dream(l, T, top_k, top_p, seed, step, position, mask_id):
    """-> token, prob, margin, entropy (= neg_entropy, Dream's Σ p·log(p + 1e-10)), gap, and
    lo/hi: each stat's interval over the survivor sets reachable by flipping a boundary closer
    than GAP_MIN (equal to the stat when no boundary is that close)."""
    l = np.asarray(l, dtype=F32).copy()
    l[mask_id] = -np.inf
    V = len(l)
    lt = (l / F32(T)).astype(F32) if T > 0 else l
    ld = lt.astype(np.float64)
    e = np.exp(ld - ld.max())
    order = np.lexsort((np.arange(V), -ld))                               # lt desc, index asc
    m_p, cum = V, None
    if top_p < 1:
        cum = np.concatenate([[0.0], np.cumsum(e[order] / e.sum())])      # cum[j]: before j
        m_p = int(np.sum(cum[:V] <= top_p))
    K = min(top_k, V) if top_k > 0 else V
    if T == 0:
        score = l
    else:
        g = noise_gumbel(noise_bits(seed, 0, step, position, np.arange(V)))
        score = (l + (float(T) * g).astype(F32)).astype(F32)              # float32 add

    def evaluate(surv):
        sc = score[surv]
        best = sc.max()
        tok = int(surv[sc == best].min())
        p = e[surv] / e[surv].sum()
        top = np.sort(p)[::-1]
        st = dict(prob=float(p[surv == tok][0]),
                  margin=float(top[0] - (top[1] if len(top) > 1 else 0.0)),
                  entropy=float(np.sum(p * np.log(p + 1e-10))))
        others = sc[surv != tok]
        gap = math.inf
        if len(others) and np.isfinite(others.max()):
            gap = (float(best) - float(others.max())) / max(1.0, abs(float(best)))
        return tok, st, gap

    surv = order[:min(m_p, K)]
    token, st, gap = evaluate(surv)
    alts = []                                                  # (survivor set, boundary gap)
    if cum is not None:
        if m_p < V and cum[m_p] - top_p < GAP_MIN:
            alts.append((order[:min(m_p + 1, K)], cum[m_p] - top_p))
        if m_p > 1 and top_p - cum[m_p - 1] < GAP_MIN:
            alts.append((order[:min(m_p - 1, K)], top_p - cum[m_p - 1]))
    if K < min(m_p, V) and np.isfinite(ld[order[K]]):
        kg = ref._rel(ld[order[K - 1]], ld[order[K]], ld[order[K - 1]])
        if kg < GAP_MIN:
            alts.append((np.concatenate([order[:K - 1], order[K:K + 1]]), kg))
    lo, hi = dict(st), dict(st)
    for a, bg in alts:
        if len(a) == len(surv) and np.array_equal(np.sort(a), np.sort(surv)):
            continue
        t2, st2, _ = evaluate(a)
        if t2 != token:
            gap = min(gap, bg)
        for k in STATS:
            lo[k], hi[k] = min(lo[k], st2[k]), max(hi[k], st2[k])
    return dict(token=token, **st, gap=gap, lo=lo, hi=hi)


# ----------------------------------------------------------------------------------------------
# Loops
# ----------------------------------------------------------------------------------------------

def timesteps(S):
    """torch.linspace(1, eps, S + 1) as its CUDA kernel computes it in float32 (no FMA)."""
    eps, one = F32(1e-3), F32(1.0)
    step = F32((eps - one) / F32(S))
    return [F32(one + F32(step * F32(i))) if i < (S + 1) // 2 else F32(eps - F32(step * F32(S - i)))
            for i in range(S + 1)]


def generate_dream(net, prompt, G, S, alg, T, top_k, top_p, alg_temp, seed, eos_stop, M):
    """Dream's diffusion_generate: every masked position of the canvas, the prompt's included
    (infilling), counts in n and competes. -> (answer, forwards, min_gap, stopped early, the
    prompt with its masks as filled)"""
    P, x = len(prompt), list(prompt) + [M] * G
    ts = timesteps(S)
    forwards, min_gap = 0, math.inf
    stat = {"maskgit_plus": "prob", "topk_margin": "margin", "entropy": "entropy"}.get(alg)
    for i in range(S):
        masked = [j for j in range(len(x)) if x[j] == M]
        if not masked:
            break
        last = i == S - 1
        ratio = F32(F32(1.0) - F32(ts[i + 1] / ts[i]))
        if alg == "origin":
            p = 1.0 if last else float(ratio)
            u = {j: float(noise_uniform(noise_bits(seed, 3, i, j, 0))[0]) for j in masked}
            if not last:
                min_gap = min(min_gap, min(abs(u[j] - p) for j in masked))
            chosen = [j for j in masked if u[j] < p]
            if chosen:
                lg = net.logits(x)
                forwards += 1
                for j in chosen:
                    r = pick_dream(lg[j], T, top_k, top_p, seed, i, j, M)
                    min_gap = min(min_gap, r["gap"])
                    x[j] = r["token"]
        else:
            k = len(masked) if last else int(F32(F32(len(masked)) * ratio))
            if k > 0:
                lg = net.logits(x)
                forwards += 1
                picks = {j: pick_dream(lg[j], T, top_k, top_p, seed, i, j, M) for j in masked}
                g = {j: (float(noise_gumbel(noise_bits(seed, 3, i, j, 0))[0]) if alg_temp > 0
                         else 0.0) for j in masked}

                def key(j, which):
                    c = picks[j][which][stat] if which else picks[j][stat]
                    return c / alg_temp + g[j] if alg_temp > 0 else c
                min_gap = min([min_gap] + [picks[j]["gap"] for j in masked])
                ranked = sorted(masked, key=lambda j: (-key(j, None), j))
                if k < len(ranked):
                    min_gap = min(min_gap, min(key(j, "lo") for j in ranked[:k]) -
                                  max(key(j, "hi") for j in ranked[k:]))
                for j in ranked[:k]:
                    x[j] = picks[j]["token"]
        if eos_stop:
            out, early = ref.final_answer(x, P, M, net.stop_ids, net.eos_id)
            if out is not None:
                return out, forwards, min_gap, early, x[:P]
    return x[P:], forwards, min_gap, False, x[:P]


def generate_llada(net, prompt, G, S, B, T, top_k, top_p, seed, eos_stop, M):
    """reference.py's block loop (low_confidence, no CFG / threshold) on net.logits (shifted
    where the family is) and with the family's stop-id set."""
    def logits_of(seqs):
        return np.concatenate([net.logits(q) for q in seqs], axis=0)
    return ref.block_loop(logits_of, M, net.eos_id, net.stop_ids, prompt, G, S, B, T,
                          "low_confidence", 0.0, None, seed, top_k, top_p, eos_stop)
