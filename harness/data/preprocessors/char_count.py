"""char_count: synthetic "How many X in WORD?" -> "N", generated from a seed (the CPU quickstart task).

Words have 3-10 letters drawn from an 8-letter alphabet; the asked letter is in the word ~80 % of
the time (else the answer is 0). Every word is used once, so train and val share no word. The
response is just the number, which ``harness.reward`` checks exactly.
"""
from __future__ import annotations

import random

from harness.data.formats import chat, rl_row

HELP = "synthetic letter counting (no input needed)"
DATA_SOURCE = "char_count"
ALPHABET = "abcdefgh"
WORD_LENGTHS = (3, 10)
LETTER_PRESENT = 0.8
DEFAULT_COUNTS = {"n_train": 20000, "n_val": 500}


def add_arguments(parser) -> None:
    """No options beyond the common --n-train/--n-val/--seed."""


def question(word: str, letter: str) -> str:
    return f"How many {letter} in {word}?"


def generate(count: int, seed: int) -> list[tuple[str, str, int]]:
    """``count`` distinct ``(word, letter, answer)`` triples, the same for the same seed."""
    rng = random.Random(seed)
    words: dict[str, None] = {}  # insertion-ordered set: the order depends on the seed only
    while len(words) < count:
        length = rng.randint(*WORD_LENGTHS)
        words["".join(rng.choice(ALPHABET) for _ in range(length))] = None
    items = []
    for word in words:
        absent = sorted(set(ALPHABET) - set(word))
        letter = rng.choice(word) if rng.random() < LETTER_PRESENT or not absent else rng.choice(absent)
        items.append((word, letter, word.count(letter)))
    return items


def build(args) -> dict[str, list[dict]]:
    n_train = DEFAULT_COUNTS["n_train"] if args.n_train is None else args.n_train
    n_val = DEFAULT_COUNTS["n_val"] if args.n_val is None else args.n_val
    items = generate(n_train + n_val, args.seed)
    splits = {}
    for split, part in (("train", items[:n_train]), ("val", items[n_train:])):
        splits[f"sft_{split}"] = [{"prompt": question(w, c), "response": str(n)} for w, c, n in part]
        splits[f"rl_{split}"] = [
            rl_row(DATA_SOURCE, chat(question(w, c)), str(n), ability="counting",
                   extra_info={"index": i, "split": split, "word": w, "letter": c})
            for i, (w, c, n) in enumerate(part)
        ]
    return splits
