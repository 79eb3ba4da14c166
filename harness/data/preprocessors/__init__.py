"""Preprocessors by name (``tools/prepare_data.py NAME``); each module has ``HELP``,
``add_arguments(parser)`` and ``build(args) -> {"sft_train", "sft_val", "rl_train", "rl_val": rows}``
(``args`` carries ``n_train``, ``n_val`` (None: the preprocessor's default) and ``seed``)."""
from harness.data.preprocessors import char_count, gsm8k, jsonl
from harness.data.preprocessors.common import SPLIT_FILES, drop_repeats, write_splits

PREPROCESSORS = {"char_count": char_count, "gsm8k": gsm8k, "jsonl": jsonl}

__all__ = ["PREPROCESSORS", "SPLIT_FILES", "drop_repeats", "write_splits"]
