#!/usr/bin/python3
"""Write a random LLaDA-format model directory, deterministically, for benchmarks.

Interpreter and packages: Python 3 with numpy (Debian's python3-numpy is enough);
no torch, no safetensors package (the file is written by hand). The shebang is /usr/bin/python3
(Debian's, which has numpy); run it with another python3 that has numpy if need be.

    scripts/make_random_llada.py CONFIG.json OUT_DIR [--seed 0] [--tokenizer models/tokenizer.model]

CONFIG.json holds the shape (d_model, n_heads, n_kv_heads, n_layers, mlp_hidden_size,
vocab_size, max_sequence_length, mask_token_id, eos_token_id), e.g. scripts/bench-d512-8l.json.
OUT_DIR gets:
  config.json        the input keys plus LLaDA's (rope, block_type "llama", rms, silu, no
                     biases, untied head), torch_dtype bfloat16
  model.safetensors  bf16 weights under LLaDA's names (model.transformer.wte, blocks.i.*, ln_f,
                     ff_out); matrices ~ N(0, 1/fan_in), so activations stay O(1); norms are 1;
                     the LM-head row of mask_token_id is zero (its logit is 0, never the argmax,
                     as with a trained model that never predicts [MASK]; this keeps greedy runs
                     of tools that do not ban [MASK] comparable with unmask, which does)
  tokenizer.model    a copy of --tokenizer (its vocabulary must fit in vocab_size)
The same CONFIG, seed and tokenizer give byte-identical files (checked: two runs of
`scripts/make_random_llada.py scripts/bench-d512-8l.json DIR` match byte for byte; d512 has
29.9M parameters, vocab 4096, and takes a few seconds). scripts/compare_llamacpp.sh uses it.
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def to_bf16(x):
    """float32 array -> uint16 bf16 bits, round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def write_safetensors(path, tensors):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, a in tensors:
        header[name] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, a in tensors:
            f.write(a.tobytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer", default=os.path.join(HERE, "..", "models", "tokenizer.model"))
    a = ap.parse_args()

    cfg = json.load(open(a.config))
    d, nh, nl, ff, vocab = (cfg[k] for k in ("d_model", "n_heads", "n_layers", "mlp_hidden_size", "vocab_size"))
    nkv = cfg.get("n_kv_heads", nh)
    hd = d // nh
    cfg.update({
        "model_type": "llada", "architectures": ["LLaDAModelLM"],
        "n_kv_heads": nkv, "embedding_size": cfg.get("embedding_size", vocab),
        "rope": True, "rope_theta": cfg.get("rope_theta", 10000.0), "rms_norm_eps": cfg.get("rms_norm_eps", 1e-5),
        "block_type": "llama", "layer_norm_type": "rms", "activation_type": "silu",
        "weight_tying": False, "include_bias": False, "include_qkv_bias": False,
        "torch_dtype": "bfloat16",
    })

    rng = np.random.Generator(np.random.PCG64(a.seed))

    def mat(rows, cols):  # a Linear weight [out, in] ~ N(0, 1/in)
        return to_bf16(rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols))

    ones = lambda n: to_bf16(np.ones(n, dtype=np.float32))
    p = "model.transformer."
    t = [(p + "wte.weight", to_bf16(rng.standard_normal((vocab, d), dtype=np.float32)))]
    for i in range(nl):
        b = f"{p}blocks.{i}."
        t += [(b + "attn_norm.weight", ones(d)),
              (b + "q_proj.weight", mat(nh * hd, d)),
              (b + "k_proj.weight", mat(nkv * hd, d)),
              (b + "v_proj.weight", mat(nkv * hd, d)),
              (b + "attn_out.weight", mat(d, nh * hd)),
              (b + "ff_norm.weight", ones(d)),
              (b + "ff_proj.weight", mat(ff, d)),   # gate (silu)
              (b + "up_proj.weight", mat(ff, d)),
              (b + "ff_out.weight", mat(d, ff))]    # down
    head = mat(vocab, d)
    head[cfg["mask_token_id"]] = 0
    t += [(p + "ln_f.weight", ones(d)), (p + "ff_out.weight", head)]

    os.makedirs(a.out_dir, exist_ok=True)
    with open(os.path.join(a.out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(a.out_dir, "model.safetensors"), t)
    shutil.copyfile(a.tokenizer, os.path.join(a.out_dir, "tokenizer.model"))
    n = sum(x.size for _, x in t)
    print(f"{a.out_dir}: {n:,} parameters (bf16), d_model {d}, {nl} layers, {nh} heads, "
          f"MLP {ff}, vocab {vocab}, seed {a.seed}")


if __name__ == "__main__":
    main()
