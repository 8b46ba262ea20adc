#!/usr/bin/python3
"""Write the byte-level BPE tokenizer fixtures and their golden encodings (tests/fixtures/tokenizers/).

Interpreter: /usr/bin/python3 (Debian) with the PyPI package `tokenizers` (Hugging Face):
    /usr/bin/python3 -m pip install --break-system-packages tokenizers
and the Debian package bible-kjv for the corpus. Developed with tokenizers 0.23.3.

Each fixture is a small BPE (vocab 400-520, files < 25 KB) trained with the `tokenizers` library on
the King James Bible (`bible -f Gen1:1-Rev22:21`, verse references stripped as
scripts/train_default.py does) plus a few fixed non-English lines, so that byte-level merges also
join multi-byte characters (the sentencepiece-style ones train on the KJV alone, so every
non-ASCII character takes the byte-fallback / unk path). Every golden id and decoded text comes
from the `tokenizers` library itself: unmask must reproduce them exactly.

  gpt2/          tokenizer.json: ByteLevel pre-tokenizer (GPT-2 regex), ByteLevel decoder and
                 post-processor, special <|endoftext|>
  llama3/        tokenizer.json: Split (Llama-3 regex) + ByteLevel(use_regex false), ignore_merges,
                 Llama-3/LLaDA special tokens, TemplateProcessing prepending <|startoftext|>
  qwen2/         vocab.json + merges.txt + tokenizer_config.json (added_tokens_decoder); goldens
                 from the equivalent Tokenizer (NFC, Split with the Qwen2 regex, ByteLevel)
  bytefallback/  tokenizer.json in the Llama-2 layout: Prepend/Replace normalizer, no
                 pre-tokenizer, byte_fallback with <0xNN> pieces, decoder Replace/ByteFallback/
                 Fuse/Strip, TemplateProcessing prepending <s>
  metaspace/     the same vocab with a Metaspace pre-tokenizer and decoder, no byte fallback, fused unk
  mixed/         the gpt2 model behind NFKC + Lowercase, Split (String, Removed / Regex,
                 MergedWithPrevious), Digits, ByteLevel(add_prefix_space); added tokens with
                 single_word / lstrip / rstrip / normalized
  mixed2/        the gpt2 model behind NFD + Strip + Replace(Regex), Split (MergedWithNext,
                 inverted Removed, Contiguous), Digits(individual)

golden.json per fixture: `vocab_size` (highest id + 1), `special_tokens` {content: id}, `cases[]`
{text, ids (add_special_tokens=False), decoded (skip_special_tokens=False), roundtrip},
`decode_cases[]` {ids, text} (random ids, partial UTF-8), `wrap_single` {text, ids} or null.

Usage: /usr/bin/python3 scripts/make_tokenizer_fixtures.py [--out tests/fixtures/tokenizers]
Reruns are byte-identical.
"""

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers

LLAMA3_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
                r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
               r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

# Repeated into the corpus so that some merges join the bytes of non-ASCII characters.
EXTRA_LINES = [
    "Au commencement, Dieu créa les cieux et la terre. Café, naïve, résumé, élève.",
    "Im Anfang schuf Gott Himmel und Erde. Größe, Ångström, Übung.",
    "起初，神创造天地。地是空虚混沌，渊面黑暗。日本語のテキストです。",
    "Ἐν ἀρχῇ ἦν ὁ λόγος. В начале было Слово. في البدء كان الكلمة ١٢٣",
    "emoji 😀 👍 🎉 and numbers 12345 67890, tabs\tand  spaces.",
]

LLAMA3_SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|eot_id|>", "<|mdm_mask|>"]
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"]

# Shared test strings; each fixture adds its own special-token strings.
TEXTS = [
    "Hello, world! This is a test.",
    "In the beginning God created the heaven and the earth.",
    "And God said, Let there be light: and there was light.\nAnd God saw the light, that it was good.",
    "don't", "I'LL", "we've they're she'd", "He's", "'S 'T 'Re",
    "caf\u00e9", "cafe\u0301", "na\u00efve r\u00e9sum\u00e9", "\u212bngstr\u00f6m \u00c5ngstr\u00f6m",
    "日本語のテキスト", "起初，神创造天地。",
    "emoji 😀 and 👨\u200d👩\u200d👧 family", "👍🏽", "Ἐν ἀρχῇ ἦν ὁ λόγος",
    "1234567890", "3.14159 and 1000000", "\u0663\u0664\u0665 arabic-indic", "\u00b2\u00bd \u2167",
    "   leading", "trailing   ", "a    b", "tabs\tand\t\ttabs", "\n\n\n", "line1\r\nline2", " ",
    "\t", "x \n y", "  \n\n  z", "end.\n",
    "\u0085 next line", "\u3000ideographic space", "\u00a0nbsp", "\u017f 's '\u017f", "\u212a kelvin",
    "\ufb01 ligature", "\u0130stanbul", "\u03a3\u0391\u03a3 \u039f\u0394\u039f\u03a3",
    "unmask", " unmask the unmasked",
    "<0x41> literal", "<unk> <s> </s>", "<|endoftext", "|>",
    "",
]

MIXED_TEXTS = [
    "Hello World", "HELLO WORLD again", "sayhello worldly", "x <sw> y", "x<sw>y", "<sw>", "a_<sw>",
    "a [L] b", "a   [L]b", "a [R]   b", "[R] [L]", " - dash - here - ", "a,b;c: d,,e", "Room 101, 2024-06",
    "  padded  ", "e\u0301t\u00e9", "\ufb03x \u2460\u2461",
]


def corpus_lines():
    if shutil.which("bible") is None:
        sys.exit("error: the `bible` command was not found; install it with: apt-get install bible-kjv")
    env = dict(os.environ, LC_ALL="C")
    res = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, check=False)
    if res.returncode != 0:
        sys.exit("error: `bible -f Gen1:1-Rev22:21` failed: " + res.stderr.decode(errors="replace"))
    ref = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")
    lines = []
    for line in res.stdout.decode("utf-8").splitlines():
        m = ref.match(line.strip())
        if m:
            lines.append(" ".join(m.group(4).split()))
    if len(lines) != 31102:
        sys.exit("error: expected 31102 verses from bible-kjv, got %d" % len(lines))
    return lines + EXTRA_LINES * 40


def train(tok, lines, vocab_size, special_tokens=(), alphabet=()):
    tok.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(special_tokens), initial_alphabet=list(alphabet),
        show_progress=False))
    return tok


def byte_level_base(regex, normalizer=None):
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    if regex is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), "isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


def make_gpt2(lines):
    tok = byte_level_base(None)
    train(tok, lines, 500, ["<|endoftext|>"], pre_tokenizers.ByteLevel.alphabet())
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    return tok


def make_llama3(lines):
    tok = byte_level_base(LLAMA3_REGEX)
    train(tok, lines, 520, [], pre_tokenizers.ByteLevel.alphabet())
    # A whole-word piece with no merges leading to it: only ignore_merges emits it as one id.
    j = json.loads(tok.to_str())
    j["model"]["ignore_merges"] = True
    vocab = j["model"]["vocab"]
    vocab["\u0120unmask"] = max(vocab.values()) + 1
    tok = Tokenizer.from_str(json.dumps(j))
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in LLAMA3_SPECIALS])
    bos = tok.token_to_id("<|startoftext|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|startoftext|> $A",
                                      pair="<|startoftext|> $A <|startoftext|> $B",
                                      special_tokens=[("<|startoftext|>", bos)])])
    return tok


def make_qwen2(lines, out_dir):
    tok = byte_level_base(QWEN2_REGEX, normalizers.NFC())
    train(tok, lines, 480, [], pre_tokenizers.ByteLevel.alphabet())
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in QWEN2_SPECIALS])
    tok.model.save(out_dir)  # vocab.json + merges.txt ("#version" header)
    added = {}
    for s in QWEN2_SPECIALS:
        added[str(tok.token_to_id(s))] = {"content": s, "lstrip": False, "normalized": False,
                                          "rstrip": False, "single_word": False, "special": True}
    config = {"add_prefix_space": False, "added_tokens_decoder": added, "bos_token": None,
              "eos_token": "<|endoftext|>", "model_max_length": 32768, "pad_token": "<|endoftext|>",
              "tokenizer_class": "Qwen2Tokenizer", "unk_token": None}
    write_json(os.path.join(out_dir, "tokenizer_config.json"), config)
    # The golden tokenizer is the one transformers builds from these files.
    vocab_path, merges_path = os.path.join(out_dir, "vocab.json"), os.path.join(out_dir, "merges.txt")
    ref = Tokenizer(models.BPE.from_file(vocab_path, merges_path))
    ref.normalizer = normalizers.NFC()
    ref.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), "isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    ref.decoder = decoders.ByteLevel()
    ref.post_processor = processors.ByteLevel(trim_offsets=False)
    by_id = sorted((int(i), t["content"]) for i, t in added.items())
    for _, s in by_id:
        ref.add_special_tokens([AddedToken(s, special=True, normalized=False)])
    for i, s in by_id:
        assert ref.token_to_id(s) == i, (s, i, ref.token_to_id(s))
    return ref


def sentencepiece_style_vocab(lines, byte_fallback):
    """Train a Metaspace BPE and return (vocab, merges) in the Llama-2 layout:
    <unk> <s> </s>, then <0x00>..<0xFF> (when byte_fallback), then the learned pieces."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    # note: KJV lines only (ASCII), so every other character takes the byte / unk path.
    train(tok, lines[:31102], 400, ["<unk>", "<s>", "</s>"])
    j = json.loads(tok.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    if byte_fallback:
        for b in range(256):
            vocab["<0x%02X>" % b] = len(vocab)
    for piece, _ in sorted(j["vocab"].items(), key=lambda kv: kv[1]):
        if piece not in vocab:
            vocab[piece] = len(vocab)
    return vocab, [tuple(m) for m in j["merges"]]


def make_bytefallback(lines):
    vocab, merges = sentencepiece_style_vocab(lines, byte_fallback=True)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                           normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False)
                            for s in ["<unk>", "<s>", "</s>"]])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    return tok


def make_metaspace(lines):
    vocab, merges = sentencepiece_style_vocab(lines, byte_fallback=False)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first",
                                                 split=True)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False)
                            for s in ["<unk>", "<s>", "</s>"]])
    return tok


def make_mixed(gpt2):
    tok = Tokenizer.from_str(gpt2.to_str())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(" - ", "removed"),
        pre_tokenizers.Split(Regex("[,;:]+"), "merged_with_previous"),
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)])
    tok.post_processor = None
    tok.add_special_tokens([AddedToken("<sw>", single_word=True, special=True, normalized=False),
                            AddedToken("[L]", lstrip=True, special=True, normalized=False),
                            AddedToken("[R]", rstrip=True, special=True, normalized=False)])
    tok.add_tokens([AddedToken("hello world", special=False, normalized=True)])
    return tok


def make_mixed2(gpt2):
    tok = Tokenizer.from_str(gpt2.to_str())
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Strip(),
                                           normalizers.Replace(Regex(r"\s+"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex("[aeiou]"), "merged_with_next"),
        pre_tokenizers.Split(Regex(r"[\p{L}\p{M}\p{N} ]+"), "removed", invert=True),
        pre_tokenizers.Split(Regex("[0-9]"), "contiguous"),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(),
        processors.TemplateProcessing(single="<|endoftext|> $A <|endoftext|>",
                                      special_tokens=[("<|endoftext|>", 0)])])
    return tok


def golden(tok, specials, extra_texts=(), seed=0):
    texts = list(TEXTS) + list(extra_texts)
    for s in specials:
        texts += ["a%sb" % s, "%s" % s, " %s " % s, "x\n%s\ny" % s]
    if "<|im_start|>" in specials:
        texts.append("<|im_start|>user\nhi<|im_end|>")
    if "<|eot_id|>" in specials:
        texts.append("<|start_header_id|>user<|end_header_id|>\n\nHi there!<|eot_id|>")
    cases = []
    for t in texts:
        ids = tok.encode(t, add_special_tokens=False).ids
        decoded = tok.decode(ids, skip_special_tokens=False)
        cases.append({"text": t, "ids": ids, "decoded": decoded, "roundtrip": decoded == t})
    vocab = tok.get_vocab(with_added_tokens=True)
    vocab_size = max(vocab.values()) + 1
    rng = random.Random(seed)
    decode_cases = []
    for n in [1, 2, 3, 5, 8, 20, 20, 20]:
        ids = [rng.randrange(vocab_size) for _ in range(n)]
        decode_cases.append({"ids": ids, "text": tok.decode(ids, skip_special_tokens=False)})
    for t in ["日本", "😀", "é"]:  # prefixes that end inside a multi-byte character
        ids = tok.encode(t, add_special_tokens=False).ids
        for k in range(1, len(ids)):
            decode_cases.append({"ids": ids[:k], "text": tok.decode(ids[:k], skip_special_tokens=False)})
    wrap = None
    if tok.post_processor is not None:
        t = "In the beginning"
        plain = tok.encode(t, add_special_tokens=False).ids
        wrapped = tok.encode(t, add_special_tokens=True).ids
        if wrapped != plain:
            wrap = {"text": t, "ids": wrapped}
    return {
        "generated_by": "scripts/make_tokenizer_fixtures.py",
        "tokenizers_version": __import__("tokenizers").__version__,
        "vocab_size": vocab_size,
        "special_tokens": {s: tok.token_to_id(s) for s in specials},
        "cases": cases,
        "decode_cases": decode_cases,
        "wrap_single": wrap,
    }


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")


def save_tokenizer_json(tok, path):
    write_json(path, json.loads(tok.to_str()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                   "fixtures", "tokenizers"))
    args = ap.parse_args()
    lines = corpus_lines()

    def out(name):
        d = os.path.join(args.out, name)
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(d)
        return d

    gpt2 = make_gpt2(lines)
    d = out("gpt2")
    save_tokenizer_json(gpt2, os.path.join(d, "tokenizer.json"))
    write_json(os.path.join(d, "golden.json"), golden(gpt2, ["<|endoftext|>"], seed=1))

    llama3 = make_llama3(lines)
    d = out("llama3")
    save_tokenizer_json(llama3, os.path.join(d, "tokenizer.json"))
    write_json(os.path.join(d, "golden.json"), golden(llama3, LLAMA3_SPECIALS, seed=2))

    d = out("qwen2")
    qwen2 = make_qwen2(lines, d)
    write_json(os.path.join(d, "golden.json"), golden(qwen2, QWEN2_SPECIALS, seed=3))

    bf = make_bytefallback(lines)
    d = out("bytefallback")
    save_tokenizer_json(bf, os.path.join(d, "tokenizer.json"))
    write_json(os.path.join(d, "golden.json"), golden(bf, ["<unk>", "<s>", "</s>"], seed=4))

    ms = make_metaspace(lines)
    d = out("metaspace")
    save_tokenizer_json(ms, os.path.join(d, "tokenizer.json"))
    write_json(os.path.join(d, "golden.json"), golden(ms, ["<unk>", "<s>", "</s>"], seed=5))

    mixed = make_mixed(gpt2)
    d = out("mixed")
    save_tokenizer_json(mixed, os.path.join(d, "tokenizer.json"))
    write_json(os.path.join(d, "golden.json"),
               golden(mixed, ["<sw>", "[L]", "[R]", "<|endoftext|>"], MIXED_TEXTS, seed=6))

    mixed2 = make_mixed2(gpt2)
    d = out("mixed2")
    save_tokenizer_json(mixed2, os.path.join(d, "tokenizer.json"))
    write_json(os.path.join(d, "golden.json"), golden(mixed2, ["<|endoftext|>"], MIXED_TEXTS, seed=7))


if __name__ == "__main__":
    main()
