#!/usr/bin/python3
"""Convert a LLaDA-format model directory to a GGUF that llama.cpp's diffusion CLI loads.

Interpreter and packages: Python 3 with numpy and sentencepiece (Debian: python3-numpy,
python3-sentencepiece); gguf-py is imported at run time from the llama.cpp checkout given
with --llama-cpp (it needs numpy, pyyaml, tqdm and requests importable, as in its
pyproject.toml; Debian: python3-yaml python3-tqdm python3-requests; nothing of llama.cpp is
copied here). The shebang is /usr/bin/python3 (Debian's, which has them all). Checked with
llama.cpp 3f545beccee69d9975f466ec7e45fd9aacd8ba90: llama-diffusion-cli loads the bf16 and f32
files, llama-tokenize gives the sentencepiece ids, and greedy outputs match unmask's (see
scripts/compare_llamacpp.sh).

    scripts/llada_gguf.py MODEL_DIR OUT.gguf --llama-cpp LLAMA_CPP_DIR [--outtype bf16|f32|f16]

MODEL_DIR: config.json (LLaDA keys: d_model, n_heads, n_kv_heads, n_layers, mlp_hidden_size,
vocab_size, mask_token_id, eos_token_id, rope_theta, rms_norm_eps, max_sequence_length),
*.safetensors (model.transformer.* names, bf16/f16/f32; read whole into memory as f32,
so meant for small models) and a sentencepiece tokenizer.model.
What it writes follows llama.cpp's own LLaDA conversion (conversion/llada.py): arch "llada",
non-causal attention, diffusion.shift_logits false, q_proj/k_proj rows permuted from
rotate-half RoPE to llama.cpp's pairwise ("normal") RoPE, 1-D norms as F32, matrices as
--outtype (default bf16: the bits of a bf16 checkpoint unchanged). The tokenizer is written as
llama.cpp's SPM model ("llama") with pieces, scores and types read from tokenizer.model; the
config's mask/eos (and bos/pad, if any) ids are CONTROL tokens; no BOS is added to prompts.
The chat template renders the messages' text unchanged ("{% for message in messages %}
{{ message['content'] }}{% endfor %}"): llama-diffusion-cli always applies the GGUF's template
(ChatML when there is none, which would wrap the prompt in <|im_start|> markers), and unmask
without --chat feeds the raw prompt.
"""
import argparse
import glob
import json
import os
import struct
import sys

import numpy as np


# A chat template that renders the messages' text as is (no roles, no markers).
RAW_CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def read_safetensors(path):
    """name -> float32 array."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        raw, dt = data[lo:hi], info["dtype"]
        if dt == "BF16":
            a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dt in ("F16", "F32"):
            a = np.frombuffer(raw, np.float16 if dt == "F16" else np.float32).astype(np.float32)
        else:
            sys.exit(f"{path}: tensor {name} has dtype {dt}; only BF16, F16, F32 are supported")
        out[name] = a.reshape(info["shape"])
    return out


def rope_permute(w, n_head):
    """Rows of a q/k projection from rotate-half (HF, unmask) to llama.cpp's pairwise RoPE."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--llama-cpp", required=True, help="llama.cpp checkout (its gguf-py/ is imported)")
    ap.add_argument("--outtype", choices=("bf16", "f32", "f16"), default="bf16")
    a = ap.parse_args()

    sys.path.insert(0, os.path.join(a.llama_cpp, "gguf-py"))
    try:
        import gguf
    except ImportError as e:
        sys.exit(f"cannot import gguf-py from {a.llama_cpp}/gguf-py: {e}")
    import sentencepiece as spm

    cfg = json.load(open(os.path.join(a.model_dir, "config.json")))
    d, nh, nl, ff, vocab = (cfg[k] for k in ("d_model", "n_heads", "n_layers", "mlp_hidden_size", "vocab_size"))
    nkv = cfg.get("n_kv_heads") or nh
    if cfg.get("weight_tying") or cfg.get("include_bias") or cfg.get("include_qkv_bias"):
        sys.exit("only untied LLaDA models without biases are supported")

    w = gguf.GGUFWriter(a.out, "llada")
    w.add_name(os.path.basename(os.path.normpath(a.model_dir)))
    w.add_context_length(cfg.get("max_sequence_length", 4096))
    w.add_embedding_length(d)
    w.add_block_count(nl)
    w.add_feed_forward_length(ff)
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_rope_dimension_count(d // nh)
    w.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-5)))
    w.add_vocab_size(vocab)
    w.add_causal_attention(False)
    w.add_diffusion_shift_logits(False)
    qtype, ftype = {
        "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
        "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
        "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    }[a.outtype]
    w.add_file_type(ftype)

    # Tokenizer: llama.cpp's SPM ("llama") model.
    sp = spm.SentencePieceProcessor(model_file=os.path.join(a.model_dir, "tokenizer.model"))
    if sp.vocab_size() > vocab:
        sys.exit(f"tokenizer has {sp.vocab_size()} pieces, more than vocab_size {vocab}")
    special = {cfg.get(k) for k in ("mask_token_id", "eos_token_id", "bos_token_id", "pad_token_id")} - {None}
    T = gguf.TokenType
    tokens, scores, types = [], [], []
    for i in range(vocab):
        if i >= sp.vocab_size():
            tokens.append(f"[PAD{i}]"), scores.append(-1000.0), types.append(T.UNUSED)
            continue
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(T.UNKNOWN if sp.is_unknown(i) else T.CONTROL if sp.is_control(i) or i in special
                     else T.UNUSED if sp.is_unused(i) else T.BYTE if sp.is_byte(i) else T.NORMAL)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    eos = cfg.get("eos_token_id", sp.eos_id())
    w.add_eos_token_id(eos)
    # llama.cpp's SPM default BOS is id 1 (LLaDA's mask here); point it at a real BOS or at EOS.
    w.add_bos_token_id(cfg.get("bos_token_id") if cfg.get("bos_token_id") is not None else
                       sp.bos_id() if sp.bos_id() >= 0 else eos)
    if sp.unk_id() >= 0:
        w.add_unk_token_id(sp.unk_id())
    w.add_mask_token_id(cfg["mask_token_id"])
    w.add_add_bos_token(False)  # unmask adds no BOS to a LLaDA prompt either
    w.add_add_eos_token(False)
    w.add_add_space_prefix(sp.encode("a", out_type=str)[0].startswith("\u2581"))
    # llama-diffusion-cli always formats its prompt with a chat template, ChatML when the GGUF
    # has none; this one renders the messages' text unchanged, so the prompt is the raw text.
    w.add_chat_template(RAW_CHAT_TEMPLATE)

    # Tensors, named by gguf-py's own map for the llada arch.
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLADA, nl)
    files = sorted(glob.glob(os.path.join(a.model_dir, "*.safetensors")))
    if not files:
        sys.exit(f"no *.safetensors in {a.model_dir}")
    tensors = {}
    for f in files:
        tensors.update(read_safetensors(f))
    for name, t in tensors.items():
        new = names.get_name(name, try_suffixes=(".weight",))
        if new is None:
            sys.exit(f"no GGUF name for tensor {name}")
        if name.endswith("q_proj.weight"):
            t = rope_permute(t, nh)
        elif name.endswith("k_proj.weight"):
            t = rope_permute(t, nkv)
        if t.ndim == 1:
            w.add_tensor(new, np.ascontiguousarray(t, dtype=np.float32))
        else:
            w.add_tensor(new, gguf.quants.quantize(np.ascontiguousarray(t), qtype), raw_dtype=qtype)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {a.out} ({a.outtype}, {os.path.getsize(a.out):,} bytes)")


if __name__ == "__main__":
    main()
