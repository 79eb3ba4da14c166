"""char_count: synthetic "WORD: X?" (how many X in WORD) -> "N", generated from a seed (the CPU quickstart task).

Words have 3-10 letters drawn from an 8-letter alphabet; the asked letter is in the word ~80 % of
the time (else the answer is 0). Every word is used once, so train and val share no word. The
response is just the number, which ``harness.reward`` checks exactly. ``--sft-max-word-length N``
keeps demonstrations (the SFT splits) for words of at most N letters, while the RL prompts and the
RL validation set keep every length: the usual SFT -> RL setting, where demonstrations are scarce
(here: only for short words) and a verifier checks any answer.

The question is terse and names the letter last on purpose: with "How many X in WORD?" the tiny
quickstart model stayed at the answer prior (about 41 % correct) for about 900 SFT steps, and
"WORD: how many X?" for 300 to over 600 depending on the seed ("how many" holds letters of the
alphabet, h and a, that look like matches); "WORD: X?" left the prior by step 200 on each seed tried.
"""
from __future__ import annotations

import argparse
import random

from harness.data.formats import chat, rl_row

HELP = "synthetic letter counting (no input needed)"
DATA_SOURCE = "char_count"
ALPHABET = "abcdefgh"
WORD_LENGTHS = (3, 10)
LETTER_PRESENT = 0.8
DEFAULT_COUNTS = {"n_train": 20000, "n_val": 500}


def _word_length(text: str) -> int:
    value = int(text)
    if not WORD_LENGTHS[0] <= value <= WORD_LENGTHS[1]:
        raise argparse.ArgumentTypeError(f"{value}: words have {WORD_LENGTHS[0]}..{WORD_LENGTHS[1]} letters")
    return value


def add_arguments(parser) -> None:
    parser.add_argument("--sft-max-word-length", type=_word_length, default=WORD_LENGTHS[1], metavar="N",
                        help=f"demonstrations only for words of at most N letters (default {WORD_LENGTHS[1]}: all)")


def question(word: str, letter: str) -> str:
    return f"{word}: {letter}?"


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
    longest = args.sft_max_word_length
    items = generate(n_train + n_val, args.seed)
    splits = {}
    for split, part in (("train", items[:n_train]), ("val", items[n_train:])):
        splits[f"sft_{split}"] = [{"prompt": question(w, c), "response": str(n)} for w, c, n in part if len(w) <= longest]
        splits[f"rl_{split}"] = [
            rl_row(DATA_SOURCE, chat(question(w, c)), str(n), ability="counting",
                   extra_info={"index": i, "split": split, "word": w, "letter": c})
            for i, (w, c, n) in enumerate(part)
        ]
    return splits
