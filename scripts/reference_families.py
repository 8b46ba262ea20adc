#!/usr/bin/python3
"""Independent numpy reference for the Dream, Llama (DiffuLLaMA) and LLaDA+BPE families -> fixtures.

Interpreter: /usr/bin/python3 (Debian) with python3-numpy, python3-sentencepiece and bible-kjv
(as scripts/reference.py), plus the PyPI packages `tokenizers` (developed with 0.23.3) and
`jinja2` (3.1.6):
    /usr/bin/python3 -m pip install --break-system-packages tokenizers jinja2
No torch, no transformers, no network. Helpers (noise of src/model/rng.h, LLaDA-mode pick, bf16
rounding, safetensors writer, GAP_MIN) come from scripts/reference.py (unchanged); tokenizers,
weights, the float64 forward, the Dream pick and both loops are in
scripts/reference_families_lib.py; this file holds the cases and writes the fixtures.

What it writes (default --out tests/fixtures; see tests/fixtures/README.md, "Model families"):
  tiny-dream/      Dream-v0 format: config.json (DreamModel), BF16 Qwen2 tensor names with q/k/v
                   biases, 7 query heads / 1 KV head; byte-level BPE as vocab.json + merges.txt +
                   tokenizer_config.json (ChatML chat template), specials after the BPE vocab
  tiny-llama/      DiffuLLaMA-style LlamaForCausalLM: F32, 4 / 2 heads; sentencepiece
                   tokenizer.model (vocab 1000; the mask is the ordinary token 811)
  tiny-llada-bpe/  LLaDA format (BF16, 4 / 4 heads) with a Llama-3 style tokenizer.json
                   (ignore_merges, <|startoftext|> post-processor) + tokenizer_config.json
  families.json    models{}, chat[] (jinja2 renderings), forward[] (raw logits), generate[]

Semantics (the C++ side must mirror them): Dream and Llama logits are shifted (canvas position
i >= 1 uses the head output of position i-1; position 0 uses row 0, as Dream's torch.cat does);
LLaDA is not. The mask id is banned (-inf) in every pick. Dream-mode pick: lt = l/T (float32),
top-p on softmax(lt) keeping sorted entry j iff the cumulative probability before j <= top_p,
then top-k; probs/stats on the survivors. Dream loop: float32 linspace timesteps (eps =
float32(1e-3), float32 ops, no FMA), origin / maskgit_plus / topk_margin / entropy, transfer and
alg_temp noise from stream 3 (src/model/rng.h), index 0. min_gap as in reference.py, plus |u - p| of
origin's transfer draws; a top-p/top-k boundary closer than GAP_MIN counts only where flipping it
changes the token or the set of committed positions (confidence intervals).

Logits in families.json are rounded to 9 significant digits (keeps the file small; the error
is < 1e-8 relative). Reruns are byte-identical (fixed seeds, single-threaded training, sorted
config keys).

Usage: /usr/bin/python3 scripts/reference_families.py [--out tests/fixtures] [--stats]
"""

import os
import sys

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
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

import reference as ref
from reference import GAP_MIN

PROMPTS = ["In the beginning", "And God said", "And the earth", "And God saw the light",
           "And the evening and the morning", "And the LORD God", "And the serpent said",
           "Let there be light", "And Noah builded an altar", "Who told thee",
           "  Let the waters bring forth\n"]   # the last: LLaDA's template trims it, Dream's not
SYSTEM = "You answer in the words of the King James Bible."


def case(name, model, loop, alg, G, S, B=None, T=0.0, top_k=0, top_p=1.0, alg_temp=0.0, seed=0,
         eos_stop=False, chat=None, prompt=0, infill=None):
    """chat: None = plain prompt, "sys" = system + user, "user" = user only; prompt: the first
    PROMPTS index tried; seed: the first seed tried (when the seed matters); infill: None, or
    (word index, n): that word of a plain prompt becomes n copies of the mask token's text."""
    return dict(name=name, model=model, loop=loop, alg=alg, G=G, S=S, B=B, T=T, top_k=top_k,
                top_p=top_p, alg_temp=alg_temp, seed=seed, eos_stop=eos_stop, chat=chat,
                prompt=prompt, infill=infill)


D, LM, LB, LC = "tiny-dream", "tiny-llama", "tiny-llada-bpe", "low_confidence"
GEN_SPECS = [
    case("dream_origin_g16_s8", D, "dream", "origin", 16, 8),
    case("dream_maskgit_g16_s8", D, "dream", "maskgit_plus", 16, 8, prompt=1),
    case("dream_margin_g16_s8", D, "dream", "topk_margin", 16, 8, prompt=2),
    case("dream_entropy_g16_s8", D, "dream", "entropy", 16, 8, prompt=3),
    case("dream_maskgit_g16_s24", D, "dream", "maskgit_plus", 16, 24, prompt=4),
    case("dream_origin_g12_s24", D, "dream", "origin", 12, 24, seed=5, prompt=5),
    case("dream_maskgit_topp09", D, "dream", "maskgit_plus", 16, 16, top_p=0.9, prompt=6),
    case("dream_margin_topk5", D, "dream", "topk_margin", 16, 16, top_k=5, prompt=7),
    case("dream_maskgit_algtemp05", D, "dream", "maskgit_plus", 16, 8, alg_temp=0.5, seed=11),
    case("dream_entropy_t07", D, "dream", "entropy", 16, 16, T=0.7, seed=21, prompt=1),
    case("dream_origin_t07_topk20_topp09", D, "dream", "origin", 16, 16, T=0.7, top_k=20,
         top_p=0.9, seed=31, prompt=2),
    case("dream_chat_system", D, "dream", "maskgit_plus", 16, 16, chat="sys", prompt=3),
    case("dream_chat_user", D, "dream", "entropy", 20, 10, chat="user", prompt=4),
    case("dream_chat_eos_stop", D, "dream", "maskgit_plus", 16, 16, eos_stop=True, chat="user",
         prompt=9),
    case("dream_llada_loop_g16_s16_b8", D, "llada", LC, 16, 16, B=8, prompt=5),
    case("llama_llada_loop_g16_s8_b8", LM, "llada", LC, 16, 8, B=8),
    case("llama_llada_loop_t08_topk20", LM, "llada", LC, 12, 12, B=12, T=0.8, top_k=20, seed=41,
         prompt=1),
    case("llama_llada_loop_eos_stop_t08", LM, "llada", LC, 24, 24, B=8, T=0.8, eos_stop=True,
         prompt=1),
    case("llama_dream_maskgit_g16_s16", LM, "dream", "maskgit_plus", 16, 16, prompt=2),
    case("llama_dream_origin_g16_s8", LM, "dream", "origin", 16, 8, seed=51, prompt=3),
    case("lladabpe_plain_g16_s16_b8", LB, "llada", LC, 16, 16, B=8),
    case("lladabpe_plain_t07_topp09", LB, "llada", LC, 16, 8, B=16, T=0.7, top_p=0.9, seed=61,
         prompt=1),
    case("lladabpe_chat_system", LB, "llada", LC, 24, 12, B=8, chat="sys", prompt=10),
    case("lladabpe_chat_user", LB, "llada", LC, 16, 16, B=16, chat="user", prompt=3),
    case("lladabpe_eot_stop_t08", LB, "llada", LC, 24, 24, B=8, T=0.8, eos_stop=True, seed=4,
         prompt=3),
    # Masks written in the prompt (infilling), Dream's <|mask|> and LLaDA's <|mdm_mask|>; a mask
    # first in the prompt reads logits row 0 on shifted models (Dream's torch.cat quirk).
    case("dream_infill_maskgit_g16_s16", D, "dream", "maskgit_plus", 16, 16, prompt=1,
         infill=(1, 2)),
    case("dream_infill_entropy_first_g12_s8", D, "dream", "entropy", 12, 8, prompt=2,
         infill=(0, 1)),
    case("dream_infill_origin_g16_s8", D, "dream", "origin", 16, 8, seed=71, prompt=3,
         infill=(2, 2)),
    case("dream_llada_loop_infill_first", D, "llada", LC, 8, 16, B=8, infill=(0, 1)),
    case("lladabpe_infill_g16_s8_b8", LB, "llada", LC, 16, 8, B=8, prompt=5, infill=(1, 2)),
]


def prompt_of(net, chat, pi, infill=None):
    """-> (prompt_text, chat object or None, chat_text or None, prompt ids)"""
    text = PROMPTS[pi % len(PROMPTS)]
    if infill is not None:
        words = text.split(" ")
        words[infill[0]] = net.tok.piece_text(net.mask_id) * infill[1]
        text = " ".join(words)
    if chat is None:
        return text, None, None, net.tok.encode(text)
    system = SYSTEM if chat == "sys" else None
    rendered = net.tok.render(system, text)
    return text, {"system": system, "user": text}, rendered, net.tok.encode(rendered, False)


def run_case(net, c, ids, seed):
    if c["loop"] == "dream":
        return lib.generate_dream(net, ids, c["G"], c["S"], c["alg"], c["T"], c["top_k"],
                                  c["top_p"], c["alg_temp"], seed, c["eos_stop"], net.mask_id)
    return lib.generate_llada(net, ids, c["G"], c["S"], c["B"], c["T"], c["top_k"], c["top_p"],
                              seed, c["eos_stop"], net.mask_id)


def first_stop(net, out):
    return min([out.index(t) for t in net.stop_ids if t in out] + [len(out)])


def generate_fixtures(nets):
    """Each case: the first (prompt, seed) in a fixed order whose run has min_gap >= GAP_MIN,
    emits no padding id, has a non-empty answer before its first stop id (for eos_stop cases:
    at least two tokens, and the loop must stop early)."""
    cases = []
    for c in GEN_SPECS:
        net = nets[c["model"]]
        seed_matters = c["T"] > 0 or c["alg"] == "origin" or c["alg_temp"] > 0
        found = None
        for pi in range(len(PROMPTS)):
            text, chat_obj, rendered, ids = prompt_of(net, c["chat"], c["prompt"] + pi, c["infill"])
            assert (net.mask_id in ids) == (c["infill"] is not None), text
            for seed in ([c["seed"] + i for i in range(20)] if seed_matters else [c["seed"]]):
                out, fw, gap, early, filled = run_case(net, c, ids, seed)
                cut = first_stop(net, out)
                # infill cases: some prompt mask must be filled
                if gap >= GAP_MIN and max(out) < net.tok.size and \
                        (early and cut >= 2 if c["eos_stop"] else cut > 0) and \
                        (c["infill"] is None or filled != ids):
                    found = (text, chat_obj, rendered, ids, seed, out, fw, gap, filled)
                    break
            if found:
                break
        assert found, c["name"]
        text, chat_obj, rendered, ids, seed, out, fw, gap, filled = found
        entry = {
            "name": c["name"], "model": c["model"], "loop": c["loop"], "alg": c["alg"],
            "mask_id": net.mask_id, "stop_ids": net.stop_ids, "prompt_text": text,
            "chat": chat_obj, "chat_text": rendered, "prompt_ids": ids, "gen_length": c["G"],
            "steps": c["S"], "block_length": c["B"], "temperature": c["T"], "top_k": c["top_k"],
            "top_p": c["top_p"], "alg_temp": c["alg_temp"], "seed": seed,
            "eos_stop": c["eos_stop"], "expected_ids": out,
            "expected_text": net.tok.decode(out[:first_stop(net, out)]), "forwards": fw,
            "min_gap": gap if math.isfinite(gap) else None}
        if c["infill"] is not None:
            entry["expected_filled_prompt_ids"] = filled
        cases.append(entry)
        print("%-32s prompt %-34r seed %-3d forwards %-3d gap %.2e" % (
            c["name"], text, seed, fw, gap), file=sys.stderr)
    return cases


def forward_fixtures(nets):
    cases = []
    for name, net in nets.items():
        M = net.mask_id
        ids = net.tok.encode("In the beginning God created")[:4]
        ids = ids + [M, M, net.tok.encode(" light")[0], M]
        lg = net.forward(ids)
        rows = [1, 5]  # a prompt and a mask position; every position attends to all 8
        cases.append({"model": name, "tokens": ids, "rows": rows,
                      "logits": [[float("%.9g" % v) for v in lg[r]] for r in rows]})
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "tests", "fixtures"))
    ap.add_argument("--stats", action="store_true", help="print peakiness statistics and exit")
    args = ap.parse_args()
    ref._check_rng()
    if shutil.which("bible") is None:
        sys.exit("error: `bible` not found: apt-get install bible-kjv")
    toks = lib.build_tokenizers(lib.kjv())
    nets = {name: lib.Net(name, toks[name][0]) for name in lib.SPECS}
    if args.stats:
        for name, net in nets.items():
            ids = net.tok.encode("And God said, Let there be light") + [net.mask_id] * 24
            lg = net.logits(ids).astype(np.float64)
            lg[:, net.mask_id] = -np.inf
            p = np.exp(lg - lg.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            print(name, "vocab", net.V, "tok", net.tok.size, "max prob quartiles",
                  np.percentile(p.max(1), [10, 25, 50, 75, 90]).round(3),
                  "argmax", lg.argmax(1).tolist())
        return
    for name, net in nets.items():
        net.write(args.out, toks[name][1])
    gen = generate_fixtures(nets)
    chat = [{"model": c["model"], "system": c["chat"]["system"], "user": c["chat"]["user"],
             "chat_text": c["chat_text"]} for c in gen if c["chat"]]
    models_info = {name: {"loop_logits_shifted": net.shifted, "mask_id": net.mask_id,
                          "stop_ids": net.stop_ids, "eos_token_id": net.eos_id,
                          "vocab_size": net.V, "tokenizer_size": net.tok.size}
                   for name, net in nets.items()}
    ref.write_json(os.path.join(args.out, "families.json"), {
        "generator": "scripts/reference_families.py",
        "note": "forward logits: raw head outputs (unshifted) of positions rows[], columns "
                "[0, vocab_size), 9 significant digits; top_k 0 / top_p 1.0 / alg_temp 0 mean "
                "off; block_length null for the dream loop; min_gap null: single candidates",
        "models": models_info, "chat": chat, "forward": forward_fixtures(nets),
        "generate": gen}, list_keys=("chat", "forward", "generate"))


if __name__ == "__main__":
    main()
