"""Dataset formats in verl's parquet column layout, and reading/writing them with pyarrow.

SFT rows (column names configurable, as verl's ``data.prompt_key`` / ``data.response_key`` /
``data.multiturn.messages_key``), one of:
    prompt: str (or a chat list), response: str
    messages: list of {role, content}; the loss covers every assistant turn
RL rows (verl's ``RLHFDataset`` layout):
    data_source: str                      picks the reward function (``harness.reward``)
    prompt: list of {role, content}       the chat the policy answers
    reward_model: {style, ground_truth}   ``ground_truth`` is what the scorer compares with
    ability: str, extra_info: struct      optional, carried along
Row numbers in every message are 0-based positions in the file.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CHAT_ROLES = ("system", "user", "assistant", "tool")
RL_REQUIRED_COLUMNS = ("data_source", "prompt", "reward_model")


class DataError(ValueError):
    """Bad input data; the message names the file, the (0-based) row and the column."""


@dataclass(frozen=True)
class SFTColumns:
    """Which columns hold an SFT example (verl's ``data.prompt_key`` etc.)."""

    prompt_key: str = "prompt"
    response_key: str = "response"
    messages_key: str = "messages"

    def layout(self, column_names: Iterable[str]) -> str | None:
        """``"messages"`` or ``"prompt_response"`` for a file with these columns; None if neither fits."""
        names = set(column_names)
        if self.messages_key in names:
            return "messages"
        if {self.prompt_key, self.response_key} <= names:
            return "prompt_response"
        return None


def as_file_list(files) -> list[str]:
    """``data.train_files`` as a list of paths: one path, or a list of them (any sequence, e.g. OmegaConf's)."""
    if isinstance(files, (str, os.PathLike)):
        return [os.fspath(files)]
    paths = [os.fspath(path) for path in files]
    if not paths:
        raise DataError("no data files given (an empty list)")
    return paths


def read_parquet(path: str | os.PathLike) -> pa.Table:
    """One parquet file; a missing or unreadable file raises ``DataError`` naming it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: data file does not exist")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, expected a parquet file")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{path}: not a readable parquet file ({error})") from error


def read_parquet_files(files) -> list[tuple[str, pa.Table]]:
    """Every file of ``files`` (one path or a list) as ``(path, table)``, in order.

    All files are checked before any is returned, and every missing/unreadable one is named.
    """
    tables, errors = [], []
    for path in as_file_list(files):
        try:
            tables.append((path, read_parquet(path)))
        except DataError as error:
            errors.append(str(error))
    if errors:
        raise DataError("\n".join(errors))
    return tables


def write_parquet(rows: list[dict], path: str | os.PathLike, schema: pa.Schema | None = None) -> Path:
    """Writes ``rows`` to ``path`` through a temporary file and a rename (no half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=schema)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        pq.write_table(table, temporary)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return path


def chat(user_content: str, system: str | None = None) -> list[dict]:
    """A one-turn chat list (the RL ``prompt`` column), optionally with a system message first."""
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user_content}]


def rl_row(data_source: str, prompt: list[dict], ground_truth: str, *, ability: str = "",
           extra_info: dict | None = None) -> dict:
    """One RL row in verl's layout (rule-scored: ``reward_model.style == "rule"``)."""
    return {
        "data_source": data_source,
        "prompt": prompt,
        "ability": ability,
        "reward_model": {"style": "rule", "ground_truth": str(ground_truth)},
        "extra_info": extra_info,
    }
