#!/usr/bin/env python3
# Talking to `unmask serve` with the official OpenAI Python client.
#
# Needs: Python >= 3.8 and the `openai` package from PyPI, version 1.0 or later (the
# client-object API used here; tested with 3.57), e.g.
#     python3 -m venv /tmp/oai && /tmp/oai/bin/pip install openai
# or  pip install --break-system-packages openai
#
# Run, with a server started by `build/unmask serve --port 8080` in another terminal:
#     python3 scripts/openai_client.py --base-url http://127.0.0.1:8080/v1
# (use the venv's python if openai went into one; add --api-key KEY, or set UNMASK_API_KEY,
# when the server was started with an API key).
#
# It shows a plain completion, the same one streamed, and a chat completion. The bundled model
# has no chat template, so on it the chat request is refused with a 400; a model with one
# answers it.
import argparse
import os
import sys

import openai


def main():
    ap = argparse.ArgumentParser(description="Example client for unmask serve's OpenAI-compatible API")
    ap.add_argument("--base-url", default="http://127.0.0.1:8080/v1",
                    help="the server's address, with /v1 (default: %(default)s)")
    # The client insists on some key even when the server checks none; "none" is never sent
    # anywhere but this server.
    ap.add_argument("--api-key", default=os.environ.get("UNMASK_API_KEY") or "none",
                    help="the server's --api-key (default: $UNMASK_API_KEY, else 'none')")
    ap.add_argument("--prompt", default="In the beginning God created")
    ap.add_argument("--max-tokens", type=int, default=64)
    # The bundled model decodes its answer block by block (max_tokens rounded up to whole blocks
    # of 16 tokens) and shares the steps evenly among the blocks, so the steps must be a
    # multiple of the block count: 32 suits 64 tokens.
    ap.add_argument("--steps", type=int, default=32,
                    help="denoising steps for the streamed request (default: %(default)s)")
    args = ap.parse_args()

    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key)

    # The server serves one model and accepts any name, but asking for it keeps the responses'
    # "model" field meaningful and checks the address and key before any generation.
    model = client.models.list().data[0].id
    print(f"model: {model}\n")

    # 1. A completion. temperature 0 (the server's default as well) makes it deterministic:
    # the same prompt and settings give the same text on every run and in every batch.
    r = client.completions.create(model=model, prompt=args.prompt, max_tokens=args.max_tokens,
                                  temperature=0)
    print("== completion")
    print(args.prompt + r.choices[0].text)
    print(f"[finish_reason={r.choices[0].finish_reason}, "
          f"{r.usage.prompt_tokens} prompt + {r.usage.completion_tokens} completion tokens]\n")

    # 2. The same, streamed. A diffusion model fills its whole answer at once, step by step, in
    # any order; the server sends text once nothing before it is still masked (it can no longer
    # change), so chunks are uneven runs of tokens rather than one token each.
    # The diffusion settings are not OpenAI fields, so the client only sends them through
    # extra_body: here the number of denoising steps (fewer: faster, usually worse).
    print(f"== streamed, with extra_body={{'steps': {args.steps}}}")
    print(args.prompt, end="", flush=True)
    stream = client.completions.create(model=model, prompt=args.prompt, max_tokens=args.max_tokens,
                                       temperature=0, stream=True, extra_body={"steps": args.steps})
    for chunk in stream:
        if chunk.choices:
            print(chunk.choices[0].text, end="", flush=True)
    print("\n")

    # 3. A chat completion. Models without a chat template (the bundled one) get a 400 with the
    # reason in the message; the client raises it as BadRequestError.
    print("== chat completion")
    try:
        c = client.chat.completions.create(
            model=model, max_tokens=args.max_tokens,
            messages=[{"role": "user", "content": "Who created the heaven and the earth?"}])
        print(c.choices[0].message.content)
    except openai.BadRequestError as e:
        # e.body is the "error" object of the response: message, type, param, code.
        message = e.body.get("message") if isinstance(e.body, dict) else str(e)
        print(f"refused (HTTP {e.status_code}): {message}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except openai.APIConnectionError as e:
        sys.exit(f"openai_client.py: cannot reach the server: {e} (is `unmask serve` running there?)")
    except openai.AuthenticationError as e:
        sys.exit(f"openai_client.py: the server refused the key (--api-key / UNMASK_API_KEY): {e}")
