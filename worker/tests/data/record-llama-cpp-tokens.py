#!/usr/bin/env python3
"""Records llama.cpp's token ids for the tokenizer samples of
worker/tests/smollm2.rs (run once by hand; the test needs no network and no
llama.cpp). Uses the llama-cpp-python that scripts/bench-worker builds into
~/.cache/airlock/llama-venv:

  ~/.cache/airlock/llama-venv/bin/python worker/tests/data/record-llama-cpp-tokens.py \
      "$(scripts/fetch-model smollm2)" > worker/tests/data/smollm2-llama-cpp-tokens.json

Token ids as llama.cpp's own prompt path makes them: llama_tokenize with
add_special=False (no BOS; SmolLM2's add_bos_token is false anyway) and
parse_special=True (control tokens written in the text, e.g. <|im_end|>, are
parsed, as in a templated chat prompt).
"""
import hashlib, json, sys
import llama_cpp
from llama_cpp import Llama

SAMPLES = [
    # prose with punctuation, digits, currency and non-ASCII letters
    "Hello world! The invoice (no. 4521) was paid on 2024-03-15 for €1,299.50.\n"
    "It's \"urgent\": don't wait—call Zoë at +41 22 555 01 23.",
    # whitespace runs, tabs, CR LF, blank lines, leading spaces
    "Line one.\n\n\n   Indented line\twith a tab.\r\nWindows line.  Two spaces.   \n  End…",
    # contractions in upper and mixed case (GPT-2's are case-sensitive)
    "I'M SURE IT'S FINE, YOU'LL SEE. We've said they're here; I'd go. O'Brien's dog's bone.",
    # other scripts and emoji
    "Привет, мир! 你好，世界。 こんにちは 🌍👍🏽 — مرحبا بالعالم. Ελληνικά: αβγ. Straße, naïve café résumé.",
    # numbers: versions, decimals, long runs, times, maths
    "Version 3.10.12 costs $1234567.89 (≈ 10^6) on 12/31/2025 at 23:59; π≈3.14159, 2×3=6, 1e-9, 0x1F.",
    # punctuation runs directly before letters and code
    "Wait... what?!? (yes) [no] {maybe} <tag> a--b __init__ #hashtag @user a.b@example.com \"quoted\"word 'single'.\n"
    "fn main() { let x = vec![1, 2, 3]; println!(\"{:?}\", x); }\n\tif (a&&b) return -1;",
    # indented code: newlines followed by spaces and tabs
    "def f(x):\n    if x > 10:\n        return x + 1\n\n\n    return 0\n\nclass A:\n\tpass\n",
    # a chat-template control token inside the text
    "<|im_start|>user\nSummarise this.<|im_end|>\n<|im_start|>assistant\n",
    # a three-sentence document as the demo sends it
    "The city council met on Tuesday to discuss the new bridge. Engineers said the old bridge "
    "is no longer safe for heavy trucks. The council voted to start building the new bridge next spring.",
]

def main():
    model = sys.argv[1]
    llm = Llama(model_path=model, vocab_only=True, verbose=False)
    sha = hashlib.sha256(open(model, "rb").read()).hexdigest()
    out = {
        "about": "llama.cpp's token ids for SmolLM2-135M-Instruct.Q4_1.gguf; "
                 "made by worker/tests/data/record-llama-cpp-tokens.py (see there); "
                 "checked by worker/tests/smollm2.rs",
        "llama_cpp_python": llama_cpp.__version__,
        "gguf_sha256": sha,
        "add_special": False,
        "parse_special": True,
        "samples": [{"text": t, "ids": llm.tokenize(t.encode("utf-8"), add_bos=False, special=True)}
                    for t in SAMPLES],
    }
    json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")

main()
