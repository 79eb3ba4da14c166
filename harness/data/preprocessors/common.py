"""What every preprocessor shares: reading jsonl sources, splitting, writing the four parquet files."""
from __future__ import annotations

import json
import random
from pathlib import Path

from harness.data.formats import DataError, write_parquet

SPLIT_FILES = {name: f"{name}.parquet" for name in ("sft_train", "sft_val", "rl_train", "rl_val")}


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line; errors name the file and the (1-based) line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: input file does not exist")
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path} line {number}: not valid JSON ({error})") from error
            if not isinstance(record, dict):
                raise DataError(f"{path} line {number}: expected a JSON object, got {type(record).__name__}")
            records.append((number, record))
    if not records:
        raise DataError(f"{path}: no records")
    return records


def take(items: list, count: int | None, seed: int) -> list:
    """``count`` items chosen with ``seed`` (in their original order); all of them for None."""
    if count is None or count >= len(items):
        return list(items)
    chosen = sorted(random.Random(seed).sample(range(len(items)), count))
    return [items[i] for i in chosen]


def drop_repeats(splits: dict[str, list[dict]]) -> dict[str, int]:
    """Drops rows repeating an earlier one (train before val; RL rows by data_source and prompt), as
    validation would refuse them; returns how many each split lost."""
    dropped = {}
    for kind, key in (("sft", lambda row: row), ("rl", lambda row: [row["data_source"], row["prompt"]])):
        seen = set()
        for name in (f"{kind}_train", f"{kind}_val"):
            kept = []
            for row in splits[name]:
                signature = json.dumps(key(row), sort_keys=True, ensure_ascii=False)
                if signature not in seen:
                    seen.add(signature)
                    kept.append(row)
            dropped[name], splits[name] = len(splits[name]) - len(kept), kept
    return dropped


def write_splits(splits: dict[str, list[dict]], out_dir: str | Path) -> dict[str, Path]:
    """Writes ``sft_train``, ``sft_val``, ``rl_train``, ``rl_val`` rows as parquet files into ``out_dir``."""
    missing = set(SPLIT_FILES) - set(splits)
    if missing:
        raise ValueError(f"preprocessor gave no {', '.join(sorted(missing))}")
    empty = [name for name in SPLIT_FILES if not splits[name]]
    if empty:
        raise DataError(f"no rows for {', '.join(empty)}: give --n-train/--n-val of at least 1")
    return {name: write_parquet(splits[name], Path(out_dir) / filename) for name, filename in SPLIT_FILES.items()}
