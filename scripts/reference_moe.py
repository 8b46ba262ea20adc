#!/usr/bin/python3
"""Independent float64 numpy reference for LLaDA2 (llada2_moe) and LLaDA-MoE, and the LLaDA2.0 /
LLaDA2.1 generation loops -> tests/fixtures/tiny-llada2, tiny-llada-moe and moe.json.

Interpreter: /usr/bin/python3 (Debian) with python3-numpy, python3-sentencepiece and bible-kjv
(as scripts/reference.py), plus the PyPI packages `tokenizers` (developed with 0.23.3) and
`jinja2` (3.1.6):
    /usr/bin/python3 -m pip install --break-system-packages tokenizers jinja2
No torch, no transformers, no network. Reused unchanged: the noise of src/model/rng.h, bf16
rounding, the safetensors / JSON writers and GAP_MIN (scripts/reference.py); the byte-level BPE
builder, the Tok wrapper (jinja2 chat rendering), pick_dream and the LLaDA block loop
(scripts/reference_families_lib.py). Semantics: the published modeling code (inclusionAI dFactory models/llada2_moe/modeling_llada2_moe.py and the
dllm copy of LLaDA-MoE's modeling_lladamoe.py); tests/fixtures/README.md, "LLaDA2 and LLaDA-MoE",
lists what the C++ side must mirror.

What it writes (default --out tests/fixtures):
  tiny-llada2/     LLaDA2MoeModelLM (model_type llada2_moe): BF16 tensors except the F32
                   word embedding and mlp.gate.expert_bias; hidden 64, 4 / 2 heads, head_dim 24
                   (!= 64/4), partial rotary 0.5 (12 dims), 3 layers (layer 0 dense), 8 experts in
                   4 groups, top-2 of the best 2 groups, 1 shared expert; byte-level BPE
                   tokenizer.json + tokenizer_config.json with the published LLaDA2 chat template
  tiny-llada-moe/  LLaDAMoEModelLM (model_type "llada"): F32; hidden 48, 4 / 2 heads, layer 0
                   dense (moe_layer_freq [0, 1, 1]), 8 experts top-2, softmax + expert bias,
                   shared expert; the same tokenizer.json
  moe.json         models{}, chat[], forward[] (logits + classic-mistake mutants), generate[]

Every generate case records min_gap (smallest relative margin of any discrete decision: argmax
winner vs runner-up over the whole vocabulary, |confidence - threshold| for thresholds and
editing thresholds, last committed vs best uncommitted confidence, top-k/top-p boundaries) and
route_gap (smallest margin of any expert / group selection in any forward, in router-score
units); cases are searched over a fixed list of prompts (and seeds when T > 0) until
min_gap >= GAP_MIN and route_gap >= ROUTE_GAP_MIN. Reruns are byte-identical.

Usage: /usr/bin/python3 scripts/reference_moe.py [--out tests/fixtures] [--stats]
"""

import os
import sys

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import numpy as np
    import reference_families_lib as lib
except ImportError:
    if os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") and \
            os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise

import argparse
import math
import shutil

import jinja2.sandbox
from tokenizers import Tokenizer

import reference as ref
from reference import F32, GAP_MIN

ROUTE_GAP_MIN = 1e-4   # smallest router-score margin a case may hold (scores are O(0.1..1))

# ----------------------------------------------------------------------------------------------
# Tokenizer: one byte-level BPE (Qwen2-style split, single digits, no normalizer) for both models
# ----------------------------------------------------------------------------------------------

SPECIALS = ["<|endoftext|>", "<|mask|>", "<role>", "</role>", "<|role_end|>", "<|startoftext|>"]
EOS_PIECE, MASK_PIECE, BOS_PIECE = "<|endoftext|>", "<|mask|>", "<|startoftext|>"

# The chat template of inclusionAI/LLaDA2.0-mini (and LLaDA2.1-*, the Ling-2.0 family), exactly as
# published in its tokenizer_config.json (a backslash-n inside the Jinja string literals is
# Jinja's escape; the real newlines and indentation are the file's).
LLADA2_TEMPLATE = r'''{% set thinking_option = 'off' %}
{{- '<role>SYSTEM</role>' }}
{%- if messages[0].role == 'system' %}
    {{- messages[0].content + '\n' }}
{%- endif %}
{%- if tools %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>\n" }}
{%- endif %}
{{- 'detailed thinking ' + thinking_option + '<|role_end|>' }}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if message.role == "user" %}
        {{- '<role>HUMAN</role>' + message.content + '<|role_end|>' }}
    {%- elif message.role == "system" and not loop.first %}
        {{- '<role>SYSTEM</role>' + message.content + '<|role_end|>' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if reasoning_content %}
                {{- '<role>ASSISTANT</role>' + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<role>ASSISTANT</role>' + content }}
            {%- endif %}
        {%- else %}
            {{- '<role>ASSISTANT</role>' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|role_end|>' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<role>OBSERVATION</role>' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|role_end|>' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<role>ASSISTANT</role>' }}
{%- endif %}'''


def build_tokenizer(texts):
    """-> (Tok for LLaDA2 (with the chat template), Tok for LLaDA-MoE (no template), files)"""
    t, vocab, merges = lib.byte_bpe(lib.QWEN2_RE, False, 400, SPECIALS, texts, False)
    tj = t.to_str(pretty=True)
    probe = "And God said, <role>HUMAN</role>Let there be 1234 lights!\n\n  <|mask|>caf\u00e9"
    assert Tokenizer.from_str(tj).encode(probe).ids == t.encode(probe).ids
    tok2 = lib.Tok(hf=t, template=LLADA2_TEMPLATE, bos_token=BOS_PIECE)
    tokm = lib.Tok(hf=t)
    # the published template against llama.cpp's rendering of its example conversation
    env_msgs = [{"role": "system", "content": "You are a helpful assistant"},
                {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"},
                {"role": "user", "content": "How are you?"}]
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    got = env.from_string(LLADA2_TEMPLATE).render(messages=env_msgs, add_generation_prompt=True,
                                                   bos_token=BOS_PIECE)
    assert got == ("<role>SYSTEM</role>You are a helpful assistant\ndetailed thinking off"
                   "<|role_end|><role>HUMAN</role>Hello<|role_end|><role>ASSISTANT</role>Hi there"
                   "<|role_end|><role>HUMAN</role>How are you?<|role_end|>"
                   "<role>ASSISTANT</role>"), got
    base = {"add_bos_token": False, "add_eos_token": False,
            "added_tokens_decoder": lib.added_decoder(t, SPECIALS), "bos_token": BOS_PIECE,
            "clean_up_tokenization_spaces": False, "eos_token": EOS_PIECE,
            "mask_token": MASK_PIECE, "model_max_length": 256, "pad_token": EOS_PIECE,
            "tokenizer_class": "PreTrainedTokenizerFast"}
    files2 = {"tokenizer.json": (tj + "\n").encode(),
              "tokenizer_config.json": lib.jdump(dict(base, chat_template=LLADA2_TEMPLATE))}
    filesm = {"tokenizer.json": (tj + "\n").encode(), "tokenizer_config.json": lib.jdump(base)}
    return tok2, tokm, files2, filesm


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------

def softmax_rows(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def silu(a):
    with np.errstate(over="ignore"):
        return a / (1.0 + np.exp(-a))


def mlp(h, gate, up, down):
    return (silu(h @ gate.T) * (h @ up.T)) @ down.T


def rope_partial(u, theta, rd, denom=None):
    """u [n, heads, hd]: NeoX half-split rotation of the first rd dims at positions 0..n-1 with
    inv_j = theta^(-2j/denom) (denom = rd as published); dims rd.. pass through."""
    n, _, hd = u.shape
    denom = rd if denom is None else denom
    half = rd // 2
    inv = theta ** (-(2.0 * np.arange(half)) / denom)
    a = np.arange(n, dtype=np.float64)[:, None] * inv[None, :]
    c, s = np.cos(a)[:, None, :], np.sin(a)[:, None, :]
    x1, x2 = u[..., :half], u[..., half:rd]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s, u[..., rd:]], axis=-1)


def attention(q, k, v, B):
    """q [n, H, hd], k/v [n, K, hd]; B: block length (query i sees key j iff j//B <= i//B,
    blocks aligned at position 0) or None (bidirectional). Query head h reads KV head h//(H/K)."""
    n, H, hd = q.shape
    K = k.shape[1]
    allowed = None
    if B is not None:
        blk = np.arange(n) // B
        allowed = blk[None, :] <= blk[:, None]
    o = np.empty((n, H, hd))
    for h in range(H):
        kv = h // (H // K)
        s = q[:, h, :] @ k[:, kv, :].T / math.sqrt(hd)
        if allowed is not None:
            s = np.where(allowed, s, -np.inf)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        o[:, h, :] = (p / p.sum(axis=1, keepdims=True)) @ v[:, kv, :]
    return o


def lin(rng, rows, cols, scale):
    """a random [rows, cols] matrix ~ N(0, (scale / sqrt(cols))^2)"""
    return rng.standard_normal((rows, cols)) * scale / math.sqrt(cols)


def stable_order(s):
    """row-wise order: higher score first, then lower index (s: [n, m])"""
    return np.argsort(-s, axis=1, kind="stable")


class Net:
    """Common: stored tensors (name -> (dtype, shape, bytes)), widened float64 weights, config,
    tokenizer, ids; route_gap accumulates the smallest router margin of every forward since the
    last reset."""

    def write(self, out_dir, files):
        d = os.path.join(out_dir, self.name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "wb") as f:
            f.write(lib.jdump(self.cfg))
        ref.write_safetensors(os.path.join(d, "model.safetensors"), self.stored)
        for fn, blob in files.items():
            with open(os.path.join(d, fn), "wb") as f:
                f.write(blob)

    def _store(self, raw, f32_names):
        st32, w32 = ref.store_weights({k: v for k, v in raw.items() if k in f32_names}, "F32")
        st16, w16 = ref.store_weights({k: v for k, v in raw.items() if k not in f32_names},
                                      self.dtype)
        self.stored, self.w = dict(st16, **st32), dict(w16, **w32)

    def logits(self, ids, block_length=None):
        """float32 logits of every canvas position (the decisions' input)"""
        return self.forward(ids, block_length).astype(F32)


class LLaDA2(Net):
    name = "tiny-llada2"
    MUTANTS = ("full_rope", "rope_denominator_head_dim", "qk_norm_after_rope", "qkv_grouped",
               "softmax_routing", "biased_weights", "no_group_limit", "no_renormalization",
               "bidirectional")

    def __init__(self, tok, seed=7007, emb_std=1.0, head_std=0.45, eos_boost=2.0,
                 mask_boost=1.35, gate_std=4.0, bias_std=0.3):
        self.tok, self.dtype = tok, "BF16"
        V = self.V = -(-tok.size // 16) * 16
        self.mask_id, self.eos_id = tok.piece(MASK_PIECE), tok.piece(EOS_PIECE)
        self.stop_ids = [self.eos_id]
        c = self.c = dict(d=64, H=4, K=2, hd=24, p=0.5, L=3, N=1, F=96, M=32, E=8, k=2, G=4, g=2,
                          S=1, r=2.5, theta=600000.0, eps=1e-6)
        self.rd = int(c["hd"] * c["p"])
        self.cfg = {
            "architectures": ["LLaDA2MoeModelLM"], "model_type": "llada2_moe",
            "auto_map": {"AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
                         "AutoModel": "modeling_llada2_moe.LLaDA2MoeModel",
                         "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM"},
            "hidden_size": c["d"], "num_attention_heads": c["H"], "num_key_value_heads": c["K"],
            "head_dim": c["hd"], "partial_rotary_factor": c["p"], "rotary_dim": self.rd,
            "num_hidden_layers": c["L"], "first_k_dense_replace": c["N"],
            "intermediate_size": c["F"], "moe_intermediate_size": c["M"],
            "num_experts": c["E"], "num_experts_per_tok": c["k"], "n_group": c["G"],
            "topk_group": c["g"], "num_shared_experts": c["S"],
            "routed_scaling_factor": c["r"], "rope_theta": 600000, "rope_scaling": None,
            "rms_norm_eps": c["eps"], "use_qk_norm": True, "use_qkv_bias": False,
            "use_bias": False, "tie_word_embeddings": False, "max_position_embeddings": 256,
            "hidden_act": "silu", "norm_topk_prob": True, "score_function": "sigmoid",
            "moe_router_enable_expert_bias": True, "router_dtype": "fp32", "norm_head": False,
            "use_rmsnorm": True, "use_cache": False, "initializer_range": 0.02,
            "vocab_size": V, "mask_token_id": self.mask_id, "eos_token_id": self.eos_id,
            "pad_token_id": self.eos_id, "torch_dtype": "bfloat16"}
        d, H, K, hd, F, M, E, S = (c[x] for x in ("d", "H", "K", "hd", "F", "M", "E", "S"))
        rng = np.random.Generator(np.random.PCG64(seed))
        g = 1.5
        raw = {"model.word_embeddings.weight": rng.standard_normal((V, d)) * emb_std}
        for i in range(c["L"]):
            b = "model.layers.%d." % i
            raw[b + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(d)
            raw[b + "attention.query_key_value.weight"] = lin(rng, (H + 2 * K) * hd, d, g)
            raw[b + "attention.query_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(hd)
            raw[b + "attention.key_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(hd)
            raw[b + "attention.dense.weight"] = lin(rng, d, H * hd, g)
            raw[b + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(d)

            def put(prefix, width):
                for nm, shp in (("gate_proj", (width, d)), ("up_proj", (width, d)),
                                ("down_proj", (d, width))):
                    raw[prefix + nm + ".weight"] = lin(rng, shp[0], shp[1], g)
            if i < c["N"]:
                put(b + "mlp.", F)
            else:
                raw[b + "mlp.gate.weight"] = lin(rng, E, d, gate_std)
                raw[b + "mlp.gate.expert_bias"] = rng.standard_normal(E) * bias_std
                for e in range(E):
                    put(b + "mlp.experts.%d." % e, M)
                put(b + "mlp.shared_experts.", M * S)
        raw["model.norm.weight"] = 1 + 0.1 * rng.standard_normal(d)
        head = raw["lm_head.weight"] = rng.standard_normal((V, d)) * head_std
        head[tok.size:] *= 0.1
        head[self.eos_id] *= eos_boost
        head[self.mask_id] *= mask_boost
        self._store(raw, {"model.word_embeddings.weight"} |
                    {k for k in raw if k.endswith("expert_bias")})
        self.route_gap = math.inf

    def _route(self, h, w, b, mut):
        """h [n, d] -> (expert ids [n, k], weights [n, k]); accumulates route_gap"""
        c = self.c
        E, k, G, g = c["E"], c["k"], c["G"], c["g"]
        lg = h @ w[b + "mlp.gate.weight"].T
        s = softmax_rows(lg) if "softmax_routing" in mut else sigmoid(lg)
        sb = s + w[b + "mlp.gate.expert_bias"]
        n = len(h)
        gap = math.inf
        if "no_group_limit" in mut:
            masked = sb
        else:
            gs = np.sort(sb.reshape(n, G, E // G), axis=2)[:, :, -2:].sum(axis=2)
            go = stable_order(gs)
            srt = np.take_along_axis(gs, go, axis=1)
            gap = min(gap, float((srt[:, g - 1] - srt[:, g]).min()))
            keep = np.zeros((n, G), dtype=bool)
            np.put_along_axis(keep, go[:, :g], True, axis=1)
            masked = np.where(np.repeat(keep, E // G, axis=1), sb, -np.inf)
        eo = stable_order(masked)
        idx = eo[:, :k]
        srt = np.take_along_axis(masked, eo, axis=1)
        if np.isfinite(srt[:, k]).all():
            gap = min(gap, float((srt[:, k - 1] - srt[:, k]).min()))
        self.route_gap = min(self.route_gap, gap)
        wt = np.take_along_axis(sb if "biased_weights" in mut else s, idx, axis=1)
        if k > 1 and "no_renormalization" not in mut:
            wt = wt / (wt.sum(axis=1, keepdims=True) + 1e-20)
        return idx, wt * c["r"]

    def forward(self, ids, block_length=None, mut=()):
        """Raw head outputs, float64 [len(ids), V]: positions 0..n-1, block-causal attention with
        blocks of block_length (None = bidirectional)."""
        c, w = self.c, self.w
        H, K, hd, eps = c["H"], c["K"], c["hd"], c["eps"]
        n = len(ids)
        B = None if "bidirectional" in mut else block_length
        rd = hd if "full_rope" in mut else self.rd
        denom = hd if "rope_denominator_head_dim" in mut else None
        x = w["model.word_embeddings.weight"][np.asarray(ids)]
        for i in range(c["L"]):
            b = "model.layers.%d." % i
            h = ref.rmsnorm(x, w[b + "input_layernorm.weight"], eps)
            qkv = h @ w[b + "attention.query_key_value.weight"].T
            if "qkv_grouped" in mut:        # the mistake: [q.. of group g, k_g, v_g] per KV group
                per = H // K + 2
                t = qkv.reshape(n, K, per, hd)
                q = t[:, :, :H // K].reshape(n, H, hd)
                k, v = t[:, :, H // K], t[:, :, H // K + 1]
            else:
                t = qkv.reshape(n, H + 2 * K, hd)
                q, k, v = t[:, :H], t[:, H:H + K], t[:, H + K:]
            qn = w[b + "attention.query_layernorm.weight"]
            kn = w[b + "attention.key_layernorm.weight"]
            if "qk_norm_after_rope" in mut:
                q = ref.rmsnorm(rope_partial(q, c["theta"], rd, denom), qn, eps)
                k = ref.rmsnorm(rope_partial(k, c["theta"], rd, denom), kn, eps)
            else:
                q = rope_partial(ref.rmsnorm(q, qn, eps), c["theta"], rd, denom)
                k = rope_partial(ref.rmsnorm(k, kn, eps), c["theta"], rd, denom)
            x = x + attention(q, k, v, B).reshape(n, H * hd) @ w[b + "attention.dense.weight"].T
            h = ref.rmsnorm(x, w[b + "post_attention_layernorm.weight"], eps)
            if i < c["N"]:
                x = x + mlp(h, w[b + "mlp.gate_proj.weight"], w[b + "mlp.up_proj.weight"],
                            w[b + "mlp.down_proj.weight"])
                continue
            idx, wt = self._route(h, w, b, mut)
            y = mlp(h, w[b + "mlp.shared_experts.gate_proj.weight"],
                    w[b + "mlp.shared_experts.up_proj.weight"],
                    w[b + "mlp.shared_experts.down_proj.weight"])
            for e in range(c["E"]):
                rows, slot = np.nonzero(idx == e)
                if len(rows):
                    p = b + "mlp.experts.%d." % e
                    y[rows] += wt[rows, slot][:, None] * mlp(
                        h[rows], w[p + "gate_proj.weight"], w[p + "up_proj.weight"],
                        w[p + "down_proj.weight"])
            x = x + y
        return ref.rmsnorm(x, w["model.norm.weight"], eps) @ w["lm_head.weight"].T


class LLaDAMoE(Net):
    name = "tiny-llada-moe"
    MUTANTS = ("sigmoid_routing", "unbiased_weights", "renormalized", "no_expert_bias",
               "block_causal_8")

    def __init__(self, tok, seed=8008, emb_std=1.0, head_std=0.5, eos_boost=1.5, gate_std=3.0,
                 bias_std=0.15):
        self.tok, self.dtype = tok, "F32"
        V = self.V = -(-tok.size // 16) * 16
        self.mask_id, self.eos_id = tok.piece(MASK_PIECE), tok.piece(EOS_PIECE)
        self.stop_ids = [self.eos_id]
        c = self.c = dict(d=48, H=4, K=2, L=3, Fd=32, Fe=16, Fs=16, E=8, k=2, p=1.0,
                          theta=50000.0, eps=1e-5, freq=[0, 1, 1])
        c["hd"] = c["d"] // c["H"]
        self.rd = int(c["hd"] * c["p"])
        self.cfg = {
            "architectures": ["LLaDAMoEModelLM"], "model_type": "llada",
            "hidden_size": c["d"], "num_attention_heads": c["H"], "num_key_value_heads": c["K"],
            "num_hidden_layers": c["L"], "dense_intermediate_size": c["Fd"],
            "expert_intermediate_size": c["Fe"], "shared_expert_intermediate_size": c["Fs"],
            "moe_layer_freq": c["freq"], "num_experts": c["E"], "num_experts_per_tok": c["k"],
            "norm_topk_prob": True, "moe_router_enable_expert_bias": True,
            "moe_router_score_function": "softmax", "routed_scaling_factor": 1,
            "qk_layernorm": True, "partial_rotary_factor": c["p"], "attention_bias": False,
            "clip_qkv": None, "rope_theta": c["theta"], "rope_scaling": None,
            "rms_norm_eps": c["eps"], "tie_word_embeddings": False,
            "max_position_embeddings": 256, "hidden_act": "silu", "use_cache": False,
            "initializer_range": 0.02, "router_aux_loss_coef": 0.01,
            "output_router_logits": False, "vocab_size": V, "mask_token_id": self.mask_id,
            "eos_token_id": self.eos_id, "pad_token_id": self.eos_id, "torch_dtype": "float32"}
        d, H, K, hd, E = c["d"], c["H"], c["K"], c["hd"], c["E"]
        rng = np.random.Generator(np.random.PCG64(seed))
        g = 1.5
        raw = {"model.embed_tokens.weight": rng.standard_normal((V, d)) * emb_std}
        for i in range(c["L"]):
            b = "model.layers.%d." % i
            raw[b + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(d)
            for nm, rows in (("q_proj", H * hd), ("k_proj", K * hd), ("v_proj", K * hd)):
                raw[b + "self_attn.%s.weight" % nm] = lin(rng, rows, d, g)
            raw[b + "self_attn.o_proj.weight"] = lin(rng, d, H * hd, g)
            raw[b + "self_attn.q_norm.weight"] = 1 + 0.1 * rng.standard_normal(hd)
            raw[b + "self_attn.k_norm.weight"] = 1 + 0.1 * rng.standard_normal(hd)
            raw[b + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(d)

            def put(prefix, width):
                for nm, shp in (("gate_proj", (width, d)), ("up_proj", (width, d)),
                                ("down_proj", (d, width))):
                    raw[prefix + nm + ".weight"] = lin(rng, shp[0], shp[1], g)
            if c["freq"][i] == 0:
                put(b + "mlp.", c["Fd"])
            else:
                raw[b + "mlp.gate.weight"] = lin(rng, E, d, gate_std)
                raw[b + "mlp.expert_bias"] = rng.standard_normal(E) * bias_std
                for e in range(E):
                    put(b + "mlp.experts.%d." % e, c["Fe"])
                put(b + "shared_expert.", c["Fs"])
        raw["model.norm.weight"] = 1 + 0.1 * rng.standard_normal(d)
        head = raw["lm_head.weight"] = rng.standard_normal((V, d)) * head_std
        head[tok.size:] *= 0.1
        head[self.eos_id] *= eos_boost
        self._store(raw, set(raw))
        self.route_gap = math.inf

    def forward(self, ids, block_length=None, mut=()):
        """Raw head outputs, float64 [len(ids), V]; LLaDA-MoE attention is always bidirectional
        (block_length is ignored; the block_causal_8 mutant is the mistake of masking it)."""
        c, w = self.c, self.w
        H, K, hd, eps, E, k = c["H"], c["K"], c["hd"], c["eps"], c["E"], c["k"]
        n = len(ids)
        x = w["model.embed_tokens.weight"][np.asarray(ids)]
        for i in range(c["L"]):
            b = "model.layers.%d." % i
            h = ref.rmsnorm(x, w[b + "input_layernorm.weight"], eps)
            q = (h @ w[b + "self_attn.q_proj.weight"].T).reshape(n, H, hd)
            kk = (h @ w[b + "self_attn.k_proj.weight"].T).reshape(n, K, hd)
            v = (h @ w[b + "self_attn.v_proj.weight"].T).reshape(n, K, hd)
            q = ref.rmsnorm(q, w[b + "self_attn.q_norm.weight"], eps)
            kk = ref.rmsnorm(kk, w[b + "self_attn.k_norm.weight"], eps)
            q, kk = rope_partial(q, c["theta"], self.rd), rope_partial(kk, c["theta"], self.rd)
            B = 8 if "block_causal_8" in mut else None
            x = x + attention(q, kk, v, B).reshape(n, H * hd) @ w[b + "self_attn.o_proj.weight"].T
            h = ref.rmsnorm(x, w[b + "post_attention_layernorm.weight"], eps)
            if c["freq"][i] == 0:
                x = x + mlp(h, w[b + "mlp.gate_proj.weight"], w[b + "mlp.up_proj.weight"],
                            w[b + "mlp.down_proj.weight"])
                continue
            lg = h @ w[b + "mlp.gate.weight"].T
            p = sigmoid(lg) if "sigmoid_routing" in mut else softmax_rows(lg)
            pb = p if "no_expert_bias" in mut else p + w[b + "mlp.expert_bias"]
            eo = stable_order(pb)
            idx = eo[:, :k]
            srt = np.take_along_axis(pb, eo, axis=1)
            self.route_gap = min(self.route_gap, float((srt[:, k - 1] - srt[:, k]).min()))
            wt = np.take_along_axis(p if "unbiased_weights" in mut else pb, idx, axis=1)
            if "renormalized" in mut:
                wt = wt / wt.sum(axis=1, keepdims=True)
            y = mlp(h, w[b + "shared_expert.gate_proj.weight"],
                    w[b + "shared_expert.up_proj.weight"], w[b + "shared_expert.down_proj.weight"])
            for e in range(E):
                rows, slot = np.nonzero(idx == e)
                if len(rows):
                    pe = b + "mlp.experts.%d." % e
                    y[rows] += wt[rows, slot][:, None] * mlp(
                        h[rows], w[pe + "gate_proj.weight"], w[pe + "up_proj.weight"],
                        w[pe + "down_proj.weight"])
            x = x + y
        return ref.rmsnorm(x, w["model.norm.weight"], eps) @ w["lm_head.weight"].T


# ----------------------------------------------------------------------------------------------
# Pick (nothing banned) and the LLaDA2 loops
# ----------------------------------------------------------------------------------------------

class NoTermination(Exception):
    """the LLaDA2.1 loop cannot end: `forwards` forwards ran, the last changed nothing while
    masks remain in block `block` (or the iteration cap was hit); gap: min_gap so far"""

    def __init__(self, why, forwards, block, gap):
        super().__init__(why)
        self.why, self.forwards, self.block, self.gap = why, forwards, block, gap


def pick(l, T, top_k, top_p, seed, step, position):
    """-> dict(token, prob, lo, hi, gap). T == 0: argmax over the whole row (the mask token
    included, lowest id on ties), prob = softmax(l)[token]; T > 0: lib.pick_dream's filtered
    Gumbel-max, with nothing banned (the row is extended by one banned dummy entry)."""
    l = np.asarray(l, dtype=F32)
    if T == 0:
        assert top_k == 0 and top_p >= 1.0
        ld = l.astype(np.float64)
        order = np.lexsort((np.arange(len(l)), -ld))
        tok, best, second = int(order[0]), float(ld[order[0]]), float(ld[order[1]])
        e = np.exp(ld - best)
        prob = float(e[tok] / e.sum())
        return dict(token=tok, prob=prob, lo=prob, hi=prob,
                    gap=(best - second) / max(1.0, abs(best)))
    r = lib.pick_dream(np.concatenate([l, np.array([0.0], dtype=F32)]), T, top_k, top_p, seed,
                       step, position, len(l))
    assert r["token"] < len(l)
    return dict(token=r["token"], prob=r["prob"], lo=r["lo"]["prob"], hi=r["hi"]["prob"],
                gap=r["gap"])


def thr_gap(r, tau):
    """margin of `prob > tau` over the confidence interval [lo, hi]"""
    if r["lo"] <= tau <= r["hi"] and r["lo"] != r["hi"]:
        return 0.0
    return min(abs(r["lo"] - tau), abs(r["hi"] - tau))


def generate_llada2(net, prompt, G, S, B, threshold=0.95, editing_threshold=None,
                    max_post_steps=16, T=0.0, top_k=0, top_p=1.0, seed=0, eos_early_stop=False,
                    max_iters=400):
    """LLaDA2.0 generate() (editing_threshold None) or LLaDA2.1 (M2T + T2T, num_to_transfer 1),
    each denoising iteration a full block-causal forward over the window [0, (b+1)B).
    -> dict(raw = x[P:P+G], answer (cut after the first EOS, inclusive), forwards, gap,
    masks_left, edits, max_commit, stop ('none' | 'block_eos' | 'early_return' | 'early_stop'),
    last_block)."""
    M, EOS = net.mask_id, net.eos_id
    P = len(prompt)
    S = min(S, G)                                        # minimal_topk = 1
    nb = -(-(P + G) // B)
    x = list(prompt) + [M] * (nb * B - P)
    sched = [B // S + (1 if j < B % S else 0) for j in range(S)]
    step, gap, edits, max_commit, zero_step_forwards = 0, math.inf, 0, 0, 0
    stop, last_block = "none", nb - 1

    def block_picks(lo, hi):
        nonlocal step
        lg = net.logits(x[:hi], B)[lo:hi]
        rs = {lo + j: pick(lg[j], T, top_k, top_p, seed, step, lo + j) for j in range(hi - lo)}
        step += 1
        return rs

    def finish(answer):
        raw = x[P:P + G]
        return dict(raw=raw, answer=answer, forwards=step, gap=gap, masks_left=raw.count(M),
                    edits=edits, max_commit=max_commit, stop=stop, last_block=last_block,
                    zero_step_forwards=zero_step_forwards)

    def cut(a):
        return a[:a.index(EOS) + 1] if EOS in a else a

    for b in range(P // B, nb):
        lo, hi = b * B, (b + 1) * B
        if editing_threshold is None:
            for j in range(S):
                active = [i for i in range(lo, hi) if x[i] == M]
                if not active:
                    break
                rs = block_picks(lo, hi)
                zero_step_forwards += sched[j] == 0
                gap = min([gap] + [rs[i]["gap"] for i in active] +
                          [thr_gap(rs[i], threshold) for i in active])
                high = [i for i in active if rs[i]["prob"] > threshold]
                if len(high) >= sched[j]:
                    commit = high
                else:
                    kk = min(sched[j], len(active))
                    ranked = sorted(active, key=lambda i: (-rs[i]["prob"], i))
                    commit = ranked[:kk]
                    if kk < len(ranked):
                        gap = min(gap, min(rs[i]["lo"] for i in commit) -
                                  max(rs[i]["hi"] for i in ranked[kk:]))
                max_commit = max(max_commit, len(commit))
                for i in commit:
                    x[i] = rs[i]["token"]
                if eos_early_stop and any(rs[i]["token"] == EOS for i in commit):
                    e = x[:hi].index(EOS)
                    if M not in x[P:e]:
                        # (an EOS in the block padding past P+G returns more than G ids: such
                        # runs are not written)
                        stop = "early_return" if e < P + G else "early_return_past_end"
                        last_block = b
                        return finish(x[P:e + 1])
            if EOS in x[P:hi]:
                if b < nb - 1:
                    stop, last_block = "block_eos", b
                break
        else:
            post, iters = 0, 0
            while True:
                old = x[lo:hi]
                active = [i for i in range(lo, hi) if x[i] == M]
                if not active:
                    post += 1
                if post > max_post_steps:
                    break
                iters += 1
                if iters > max_iters:
                    raise NoTermination("iteration cap", step, b, gap)
                rs = block_picks(lo, hi)
                commit = []
                if active:
                    gap = min([gap] + [rs[i]["gap"] for i in active] +
                              [thr_gap(rs[i], threshold) for i in active])
                    high = [i for i in active if rs[i]["prob"] > threshold]
                    if len(high) >= 1:
                        commit = high
                    else:
                        ranked = sorted(active, key=lambda i: (-rs[i]["prob"], i))
                        commit = ranked[:1]
                        if len(ranked) > 1:
                            gap = min(gap, rs[ranked[0]]["lo"] -
                                      max(rs[i]["hi"] for i in ranked[1:]))
                editable = [i for i in range(lo, hi) if x[i] != M and i >= P]
                gap = min([gap] + [rs[i]["gap"] for i in editable] +
                          [thr_gap(rs[i], editing_threshold) for i in editable
                           if rs[i]["token"] != x[i]])
                edit = [i for i in editable
                        if rs[i]["prob"] > editing_threshold and rs[i]["token"] != x[i]]
                max_commit = max(max_commit, len(commit))
                edits += len(edit)
                for i in commit + edit:
                    x[i] = rs[i]["token"]
                if not active and not edit:
                    break
                if T == 0 and active and x[lo:hi] == old:
                    raise NoTermination("stall", step, b, gap)   # the same forward forever
            if eos_early_stop and M not in x[P:hi] and EOS in x[P:hi]:
                if b < nb - 1:
                    stop, last_block = "early_stop", b
                break
    return finish(cut(x[P:P + G]))


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------

PROMPTS = ["In the beginning", "And God said", "And the earth was without form",
           "And God saw the light", "And the evening and the morning", "And the LORD God",
           "And the serpent said", "Let there be light", "And Noah builded an altar",
           "Who told thee", "And God blessed them", "These are the generations of the heavens",
           "And Cain talked with Abel his brother", "And the waters prevailed",
           "And God remembered Noah", "Behold, the people is one"]
SYSTEM = "You answer in the words of the King James Bible."


def more_prompts(texts, n=48):
    """the first 3-7 words of KJV verses (Gen 1-11), after the fixed list"""
    out = []
    for i, t in enumerate(texts[::6][:n]):
        w = t.rstrip(".;:,").split(" ")
        out.append(" ".join(w[:3 + i % 5]).rstrip(".;:,"))
    return out

L2, LM = "tiny-llada2", "tiny-llada-moe"


def case(name, model, loop, G, S, B, thr=0.95, et=None, mps=16, T=0.0, top_k=0, top_p=1.0,
         seed=0, eos_stop=False, prompt=0, p_mult=False, chat=None, need=()):
    """need: conditions the run must meet (see meets()); p_mult: the prompt length must be a
    multiple of B (else must not be); chat: None | 'sys' | 'user'"""
    return dict(name=name, model=model, loop=loop, G=G, S=S, B=B, thr=thr, et=et, mps=mps, T=T,
                top_k=top_k, top_p=top_p, seed=seed, eos_stop=eos_stop, prompt=prompt,
                p_mult=p_mult, chat=chat, need=need)


GEN_SPECS = [
    case("l20_b4_s4", L2, "llada2", 12, 4, 4, prompt=0),
    case("l20_b4_s2_g10", L2, "llada2", 10, 2, 4, prompt=1),
    case("l20_b8_s16_trailing_zero_steps", L2, "llada2", 16, 16, 8, prompt=2, need=("zero_steps",)),
    case("l20_b8_s8_thr05_parallel", L2, "llada2", 16, 8, 8, thr=0.5, prompt=3,
         need=("parallel",)),
    case("l20_b16_s8_prompt_tail", L2, "llada2", 16, 8, 16, prompt=4),
    case("l20_b4_s4_prompt_multiple", L2, "llada2", 8, 4, 4, prompt=5, p_mult=True),
    case("l20_eos_block_stop_b4", L2, "llada2", 24, 4, 4, prompt=6, need=("block_eos",)),
    case("l20_eos_block_stop_b8", L2, "llada2", 32, 4, 8, thr=0.5, prompt=7, need=("block_eos",)),
    case("l20_mask_left", L2, "llada2", 16, 4, 8, prompt=8, need=("masks_left",)),
    case("l20_eos_early_stop", L2, "llada2", 24, 8, 8, prompt=9, eos_stop=True,
         need=("early_return",)),
    case("l20_chat_system", L2, "llada2", 12, 6, 8, thr=0.5, prompt=10, chat="sys"),
    case("l20_t07_topk20", L2, "llada2", 12, 4, 4, T=0.7, top_k=20, seed=11, prompt=11),
    case("l21_et09", L2, "llada21", 12, 4, 4, thr=0.95, et=0.9, mps=3, prompt=12,
         need=("edits",)),
    case("l21_q_mode_t07_et05", L2, "llada21", 16, 8, 8, thr=0.7, et=0.5, mps=4, prompt=13,
         need=("edits",)),
    case("l21_s_mode_t05_et00", L2, "llada21", 12, 4, 4, thr=0.5, et=0.0, mps=2, prompt=14,
         need=("edits",)),
    case("l21_eos_early_stop", L2, "llada21", 24, 8, 8, thr=0.7, et=0.5, mps=2, prompt=15,
         eos_stop=True, need=("early_stop",)),
    case("l21_chat_user_et05", L2, "llada21", 8, 8, 8, thr=0.7, et=0.5, mps=2, prompt=0,
         chat="user"),
    case("l21_t08_topp09", L2, "llada21", 12, 4, 4, thr=0.7, et=0.5, mps=2, T=0.8, top_p=0.9,
         seed=21, prompt=1),
    case("moe_g16_s16_b8", LM, "llada", 16, 16, 8, thr=None, mps=None, prompt=2),
    case("moe_g16_s8_b16", LM, "llada", 16, 8, 16, thr=None, mps=None, prompt=3),
    case("moe_g24_s12_b8", LM, "llada", 24, 12, 8, thr=None, mps=None, prompt=4),
    case("moe_eos_stop_g24_b8", LM, "llada", 24, 24, 8, thr=None, mps=None, prompt=5,
         eos_stop=True, need=("early",)),
    case("moe_t08_topk20", LM, "llada", 16, 8, 8, thr=None, mps=None, T=0.8, top_k=20, seed=31,
         prompt=6),
]


def prompt_of(net, c, pi):
    text = PROMPTS[pi % len(PROMPTS)]
    if c["chat"] is None:
        return text, None, net.tok.encode(text, False)
    system = SYSTEM if c["chat"] == "sys" else None
    rendered = net.tok.render(system, text)
    return text, {"system": system, "user": text, "chat_text": rendered}, \
        net.tok.encode(rendered, False)


def run(net, c, ids, seed):
    net.route_gap = math.inf
    if c["loop"] == "llada":
        out, fw, gap, early, _ = lib.generate_llada(net, ids, c["G"], c["S"], c["B"], c["T"],
                                                    c["top_k"], c["top_p"], seed, c["eos_stop"],
                                                    net.mask_id)
        cut = out[:out.index(net.eos_id) + 1] if net.eos_id in out else out
        r = dict(raw=out, answer=cut, forwards=fw, gap=gap, masks_left=out.count(net.mask_id),
                 edits=0, max_commit=0, stop="early" if early else "none", last_block=None,
                 zero_step_forwards=0)
    else:
        r = generate_llada2(net, ids, c["G"], c["S"], c["B"], c["thr"], c["et"], c["mps"], c["T"],
                            c["top_k"], c["top_p"], seed, c["eos_stop"])
    r["route_gap"] = net.route_gap
    return r


def meets(net, c, ids, r):
    P, B = len(ids), c["B"]
    if (P % B == 0) != c["p_mult"] or net.eos_id in ids:
        return False
    if any(t >= net.tok.size and t != net.mask_id for t in r["raw"]):
        return False                                     # no padding ids (they have no text)
    if r["gap"] < GAP_MIN or r["route_gap"] < ROUTE_GAP_MIN:
        return False
    n_ans = len(r["answer"]) - (1 if r["answer"][-1:] == [net.eos_id] else 0)
    if n_ans < 2:
        return False                                     # some text before the first EOS
    if not set(c["need"]) & {"block_eos", "early_return", "early_stop", "early"} and \
            r["stop"] != "none":
        return False                                     # only the stop cases stop early
    for need in c["need"]:
        if need == "parallel" and r["max_commit"] < 2:
            return False
        if need in ("block_eos", "early_return", "early_stop", "early") and r["stop"] != need:
            return False
        if need == "masks_left" and net.mask_id not in r["answer"]:
            return False
        if need == "edits" and r["edits"] == 0:
            return False
        if need == "zero_steps" and r["zero_step_forwards"] == 0:
            return False
    if not set(c["need"]) & {"masks_left", "zero_steps"} and net.mask_id in r["answer"]:
        return False                                     # leftover masks only where asked
    return True


def generate_fixtures(nets):
    cases = []
    for c in GEN_SPECS:
        net = nets[c["model"]]
        seeds = [c["seed"] + i for i in range(12)] if c["T"] > 0 else [c["seed"]]
        found, skipped = None, 0
        for pi in range(len(PROMPTS)):
            text, chat, ids = prompt_of(net, c, c["prompt"] + pi)
            for seed in seeds:
                try:
                    r = run(net, c, ids, seed)
                except NoTermination:
                    skipped += 1
                    continue
                if meets(net, c, ids, r):
                    found = (text, chat, ids, seed, r)
                    break
            if found:
                break
        assert found, c["name"]
        text, chat, ids, seed, r = found
        entry = {
            "name": c["name"], "model": c["model"],
            "loop": "llada" if c["loop"] == "llada" else "llada2",
            "prompt_text": text, "chat": None if chat is None else
            {"system": chat["system"], "user": chat["user"]},
            "chat_text": None if chat is None else chat["chat_text"], "prompt_ids": ids,
            "gen_length": c["G"], "steps": c["S"], "block_length": c["B"],
            "threshold": c["thr"], "editing_threshold": c["et"],
            "max_post_steps": c["mps"], "temperature": c["T"], "top_k": c["top_k"],
            "top_p": c["top_p"], "seed": seed, "eos_early_stop": c["eos_stop"],
            "expected_raw_ids": r["raw"], "expected_ids": r["answer"],
            "expected_text": net.tok.decode([t for t in r["answer"] if t != net.eos_id]),
            "masks_left": r["masks_left"], "forwards": r["forwards"],
            "min_gap": r["gap"] if math.isfinite(r["gap"]) else None,
            "route_gap": r["route_gap"]}
        if c["loop"] == "llada21":
            entry["edits"] = r["edits"]
        if c["loop"] != "llada":
            entry["stop"] = r["stop"]
        cases.append(entry)
        print("%-34s P %-3d seed %-3d fw %-3d masks %-2d edits %-3d stop %-12s gap %.2e route %.2e"
              " (skipped %d non-terminating)" % (
                  c["name"], len(ids), seed, r["forwards"], r["masks_left"], r["edits"],
                  r["stop"], r["gap"], r["route_gap"], skipped), file=sys.stderr)
    return cases


NONTERM_SPEC = case("l21_stall", L2, "llada21", 16, 16, 4, thr=0.95, et=0.9, mps=16, prompt=0)


def nonterminating_fixtures(nets):
    """one LLaDA2.1 request (defaults: threshold 0.95, editing_threshold 0.9) whose published
    loop never ends: a forward changes nothing while masks remain, so every later forward is the
    same; a runner must end it with an error. Decisions before the stall hold min_gap."""
    c = NONTERM_SPEC
    net = nets[c["model"]]
    for pi in range(len(PROMPTS)):
        text, _, ids = prompt_of(net, c, c["prompt"] + pi)
        if len(ids) % c["B"] == 0 or net.eos_id in ids:
            continue
        net.route_gap = math.inf
        try:
            run(net, c, ids, 0)
        except NoTermination as e:
            if e.why == "stall" and e.gap >= GAP_MIN and net.route_gap >= ROUTE_GAP_MIN:
                print("%-34s P %-3d stalls in block %d after %d forwards, gap %.2e" % (
                    c["name"], len(ids), e.block, e.forwards, e.gap), file=sys.stderr)
                return [{"name": c["name"], "model": c["model"], "loop": "llada2",
                         "prompt_text": text, "prompt_ids": ids, "gen_length": c["G"],
                         "steps": c["S"], "block_length": c["B"], "threshold": c["thr"],
                         "editing_threshold": c["et"], "max_post_steps": c["mps"],
                         "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0,
                         "eos_early_stop": False, "stall_block": e.block,
                         "stall_forwards": e.forwards, "min_gap": e.gap,
                         "route_gap": net.route_gap}]
    raise AssertionError("no stalling prompt")


def rel_diff(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def sig9(rows):
    return [[float("%.9g" % v) for v in row] for row in rows]


def forward_fixtures(nets):
    cases = []
    for name, specs in ((L2, [(4, True), (8, False), (None, False)]), (LM, [(None, True)])):
        net = nets[name]
        M = net.mask_id
        ids = net.tok.encode("And God said, Let there be light: and there was light.", False)[:9]
        ids = ids + [M, M, net.tok.encode(" light", False)[0], M, M, net.eos_id, M, M]
        assert 12 <= len(ids) <= 20
        for B, with_mut in specs:
            rows = [2, 6, 10, 15] if len(ids) > 15 else [2, 6, 10, len(ids) - 1]
            net.route_gap = math.inf
            lg = net.forward(ids, B)
            if B is not None and name == L2:     # block-causal: a window's rows ignore later blocks
                for hi in range(B, len(ids), B):
                    assert np.abs(net.forward(ids[:hi], B) - lg[:hi]).max() < 1e-12
            entry = {"model": name, "tokens": ids, "block_length": B, "rows": rows,
                     "logits": sig9(lg[rows]), "route_gap": net.route_gap}
            assert net.route_gap >= ROUTE_GAP_MIN, (name, B, net.route_gap)
            if with_mut:
                entry["mutants"] = {}
                for mname in net.MUTANTS:
                    ml = net.forward(ids, B, mut=(mname,))
                    dd = rel_diff(lg[rows], ml[rows])
                    print("forward %-15s B=%-4s mutant %-26s rel diff %.3f" % (name, B, mname, dd),
                          file=sys.stderr)
                    assert dd > 1e-2, (name, mname, dd)
                    entry["mutants"][mname] = sig9(ml[rows])
            cases.append(entry)
    return cases


def stats(nets):
    for name, net in nets.items():
        ids = net.tok.encode("And God said, Let there be light", False) + [net.mask_id] * 24
        lg = net.logits(ids, 8).astype(np.float64)
        p = softmax_rows(lg)
        am = lg.argmax(1)
        print(name, "V", net.V, "tok", net.tok.size, "max prob quartiles",
              np.percentile(p.max(1), [10, 25, 50, 75, 90]).round(3), "mask argmax",
              int((am == net.mask_id).sum()), "eos argmax", int((am == net.eos_id).sum()))
    net = nets[L2]
    h = np.random.Generator(np.random.PCG64(1)).standard_normal((200, 64))
    w = net.w
    b = "model.layers.1."
    base = net._route(h, w, b, ())[0]
    def changed(a, c):
        return int((np.sort(a, 1) != np.sort(c, 1)).any(1).sum())
    for mut in ("softmax_routing", "no_group_limit"):
        print("rows whose experts change under", mut, changed(base, net._route(h, w, b, (mut,))[0]),
              "/ 200")
    s = sigmoid(h @ w[b + "mlp.gate.weight"].T)
    print("rows whose experts change without the bias (no groups):",
          changed(stable_order(s)[:, :2], stable_order(s + w[b + "mlp.gate.expert_bias"])[:, :2]),
          "/ 200")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "tests", "fixtures"))
    ap.add_argument("--stats", action="store_true", help="print model statistics and exit")
    args = ap.parse_args()
    ref._check_rng()
    if shutil.which("bible") is None:
        sys.exit("error: `bible` not found: apt-get install bible-kjv")
    texts = lib.kjv()
    PROMPTS.extend(more_prompts(texts))
    tok2, tokm, files2, filesm = build_tokenizer(texts)
    nets = {L2: LLaDA2(tok2), LM: LLaDAMoE(tokm)}
    if args.stats:
        stats(nets)
        return
    nets[L2].write(args.out, files2)
    nets[LM].write(args.out, filesm)
    fwd = forward_fixtures(nets)
    gen = generate_fixtures(nets)
    nonterm = nonterminating_fixtures(nets)
    chat = [{"model": g["model"], "system": g["chat"]["system"], "user": g["chat"]["user"],
             "chat_text": g["chat_text"]} for g in gen if g["chat"]]
    spaced = "  Let the waters bring forth\n"            # the template does not trim
    chat.append({"model": L2, "system": None, "user": spaced,
                 "chat_text": nets[L2].tok.render(None, spaced)})
    models = {name: {"mask_id": net.mask_id, "eos_id": net.eos_id, "stop_ids": net.stop_ids,
                     "vocab_size": net.V, "tokenizer_size": net.tok.size, "rotary_dim": net.rd,
                     "head_dim": net.c["hd"]} for name, net in nets.items()}
    ref.write_json(os.path.join(args.out, "moe.json"), {
        "generator": "scripts/reference_moe.py",
        "note": "forward logits: raw float64 head outputs of positions rows[] (block-causal "
                "with block_length, null = bidirectional), columns [0, vocab_size), 9 "
                "significant digits; mutants: the same rows under a classic mistake (each "
                "differs by > 1e-2 relative). generate: loop llada2 = LLaDA2.0 generate() when "
                "editing_threshold is null, LLaDA2.1 otherwise; loop llada = unmask's LLaDA "
                "block loop (mask banned); expected_raw_ids = x[P:P+G] (masks may remain), "
                "expected_ids = cut after the first EOS (inclusive); top_k 0 / top_p 1.0 mean "
                "off; min_gap null: single candidates; route_gap: smallest expert/group "
                "selection margin",
        "models": models, "chat": chat, "forward": fwd, "generate": gen,
        "non_terminating": nonterm},
        list_keys=("chat", "forward", "generate", "non_terminating"))


if __name__ == "__main__":
    main()
