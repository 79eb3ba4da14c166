"""Checks SFT and RL data files and reports EVERY problem with its file, 0-based row and column.

Used by ``tools/prepare_data.py validate`` and by the trainers before any compute:

    tables = check_files(config.data.train_files, "sft", tokenizer=tokenizer, max_length=2048)

Checked: the file reads as parquet, the columns exist with the right types, no value is missing or
empty, chats have known roles, and (given a tokenizer and a length) no row is longer than allowed
once rendered with the chat template. A row repeating an earlier one is a warning (real datasets
have repeats, and verl trains on them): counted and reported, never refused.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import pyarrow as pa

from harness.data.chat_render import render, render_sft, sft_chat, token_lengths
from harness.data.formats import (CHAT_ROLES, RL_REQUIRED_COLUMNS, DataError, SFTColumns, as_file_list,
                                  read_parquet)

REPORT_LIMIT = 20
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    file: str
    row: int | None  # 0-based; None for a problem of the whole file or column
    column: str | None
    message: str
    warning: bool = False  # reported, but the data is usable (a duplicate row)

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file} row {self.row}"
        if self.column is not None:
            where += f", column '{self.column}'"
        return f"{where}: {self.message}"


def format_report(problems: list[Problem], limit: int = REPORT_LIMIT) -> str:
    lines = [f"{len(problems)} problem(s) in the data (rows are 0-based):"]
    lines += [f"  {problem}" for problem in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


def errors_and_warnings(problems: list[Problem]) -> tuple[list[Problem], list[Problem]]:
    return [p for p in problems if not p.warning], [p for p in problems if p.warning]


def warning_summary(warnings: list[Problem]) -> str:
    """One line: how many rows repeat an earlier one, and the first of them."""
    return f"{len(warnings)} duplicate row(s) kept (first: {warnings[0]})"


def raise_if_problems(problems: list[Problem], limit: int = REPORT_LIMIT) -> None:
    """Raises ``DataError`` listing the errors; warnings (duplicates) are logged in one line."""
    errors, warnings = errors_and_warnings(problems)
    if warnings:
        log.warning("%s", warning_summary(warnings))
    if errors:
        raise DataError(format_report(errors, limit))


# Arrow column types ---------------------------------------------------------------------------

def _is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _is_chat(kind: pa.DataType) -> bool:
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_struct(kind.value_type):
        return False
    fields = kind.value_type
    return all(fields.get_field_index(name) >= 0 and _is_string(fields.field(name).type)
               for name in ("role", "content"))


CHAT_TYPE = "a list of {role: string, content: string}"


def _column_type_problem(table: pa.Table, file: str, column: str, accepts, expected: str) -> list[Problem]:
    kind = table.schema.field(column).type
    if pa.types.is_null(kind) or accepts(kind):  # an all-null column is reported row by row
        return []
    return [Problem(file, None, column, f"has type {kind}, expected {expected}")]


# Row values ------------------------------------------------------------------------------------

def _text_problem(value, allow_empty: bool = False) -> str | None:
    if value is None:
        return "missing value"
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if not allow_empty and not value.strip():
        return "empty string"
    return None


def _chat_problem(messages, need_assistant: bool = False) -> str | None:
    if messages is None:
        return "missing value"
    if not messages:
        return "empty chat list"
    for turn, message in enumerate(messages):
        if message is None:
            return f"message {turn} is missing"
        if message.get("role") not in CHAT_ROLES:
            return f"message {turn} has role {message.get('role')!r}, expected one of {', '.join(CHAT_ROLES)}"
        problem = _text_problem(message.get("content"), allow_empty=message["role"] == "system")
        if problem:
            return f"message {turn} ({message['role']}) content: {problem}"
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        return "no assistant message (nothing to train on)"
    return None


def _duplicate_key(values) -> str:
    return json.dumps(values, sort_keys=True, ensure_ascii=False)


def _row_problems(table: pa.Table, file: str, checks: dict, key_columns: list[str], seen: dict | None) -> list[Problem]:
    """Runs ``checks`` (column -> function(value) -> message | None) on every row; finds repeats."""
    columns = {name: table.column(name).to_pylist() for name in set(checks) | set(key_columns)}
    problems = []
    for row in range(table.num_rows):
        bad = False
        for column, check in checks.items():
            message = check(columns[column][row])
            if message:
                problems.append(Problem(file, row, column, message))
                bad = True
        if seen is not None and not bad:
            key = _duplicate_key([columns[name][row] for name in key_columns])
            if key in seen:
                first_file, first_row = seen[key]
                where = f"row {first_row}" if first_file == file else f"{first_file} row {first_row}"
                problems.append(Problem(file, row, None, f"duplicate of {where}", warning=True))
            else:
                seen[key] = (file, row)
    return problems


def _length_problems(file: str, rows: list[int], lengths, max_length: int, what: str) -> list[Problem]:
    return [Problem(file, row, None, f"{what} is {length} tokens, over the limit of {max_length}")
            for row, length in zip(rows, lengths) if length > max_length]


def _valid_rows(table: pa.Table, problems: list[Problem]) -> list[int]:
    bad = {p.row for p in problems if p.row is not None and not p.warning}
    return [row for row in range(table.num_rows) if row not in bad]


# SFT / RL --------------------------------------------------------------------------------------

def validate_sft_rows(table: pa.Table, file: str, *, columns: SFTColumns = SFTColumns(), tokenizer=None,
                      max_length: int | None = None, seen: dict | None = None) -> list[Problem]:
    """Every problem of an SFT table (``seen``: shared across files to find repeats; None: no check)."""
    layout = columns.layout(table.column_names)
    if layout is None:
        return [Problem(file, None, None,
                        f"missing columns: expected '{columns.prompt_key}' and '{columns.response_key}', or "
                        f"'{columns.messages_key}'; found {', '.join(table.column_names) or 'none'}")]
    if layout == "messages":
        checks = {columns.messages_key: lambda value: _chat_problem(value, need_assistant=True)}
        problems = _column_type_problem(table, file, columns.messages_key, _is_chat, CHAT_TYPE)
    else:
        checks = {columns.prompt_key: lambda value: (_chat_problem(value) if isinstance(value, list)
                                                     else _text_problem(value)),
                  columns.response_key: _text_problem}
        problems = (_column_type_problem(table, file, columns.prompt_key,
                                         lambda kind: _is_string(kind) or _is_chat(kind),
                                         f"string or {CHAT_TYPE}")
                    + _column_type_problem(table, file, columns.response_key, _is_string, "string"))
    if problems:
        return problems
    problems = _row_problems(table, file, checks, list(checks), seen)
    if tokenizer is not None and max_length is not None:
        rows = _valid_rows(table, problems)
        records = table.to_pylist()
        chats = [sft_chat(records[row], columns, layout) for row in rows]
        rendered = render_sft(tokenizer, chats, [f"{file} row {row}" for row in rows])
        lengths = token_lengths(tokenizer, [text for text, _ in rendered])
        problems += _length_problems(file, rows, lengths, max_length, "the rendered chat")
    return sorted(problems, key=lambda p: (p.row is not None, p.row or 0))


def _ground_truth_problem(reward_model) -> str | None:
    if reward_model is None:
        return "missing value"
    truth = reward_model.get("ground_truth")
    if truth is None:
        return "ground_truth is missing"
    if isinstance(truth, str) and not truth.strip():
        return "ground_truth is an empty string"
    return None


def _is_reward_model(kind: pa.DataType) -> bool:
    if not pa.types.is_struct(kind) or kind.get_field_index("ground_truth") < 0:
        return False
    truth = kind.field("ground_truth").type
    return _is_string(truth) or pa.types.is_integer(truth) or pa.types.is_floating(truth) or pa.types.is_null(truth)


def validate_rl_rows(table: pa.Table, file: str, *, tokenizer=None, max_prompt_length: int | None = None,
                     seen: dict | None = None) -> list[Problem]:
    """Every problem of an RL table in verl's layout (see ``formats``)."""
    missing = [name for name in RL_REQUIRED_COLUMNS if name not in table.column_names]
    if missing:
        return [Problem(file, None, name, "missing column (RL data needs data_source, prompt, reward_model)")
                for name in missing]
    problems = (
        _column_type_problem(table, file, "data_source", _is_string, "string")
        + _column_type_problem(table, file, "prompt", _is_chat, CHAT_TYPE)
        + _column_type_problem(table, file, "reward_model", _is_reward_model,
                               "a struct with ground_truth (string or number)")
    )
    if "ability" in table.column_names:
        problems += _column_type_problem(table, file, "ability", _is_string, "string")
    if "extra_info" in table.column_names:
        problems += _column_type_problem(table, file, "extra_info",
                                         lambda kind: pa.types.is_struct(kind) or pa.types.is_map(kind),
                                         "a struct (dict)")
    if problems:
        return problems
    checks = {"data_source": _text_problem, "prompt": _chat_problem, "reward_model": _ground_truth_problem}
    problems = _row_problems(table, file, checks, ["data_source", "prompt"], seen)
    if tokenizer is not None and max_prompt_length is not None:
        rows = _valid_rows(table, problems)
        prompts = table.column("prompt").to_pylist()
        texts = render(tokenizer, [[{"role": m["role"], "content": m["content"]} for m in prompts[row]]
                                   for row in rows], add_generation_prompt=True)
        problems += _length_problems(file, rows, token_lengths(tokenizer, texts), max_prompt_length,
                                     "the rendered prompt")
    return sorted(problems, key=lambda p: (p.row is not None, p.row or 0))


def detect_kind(table: pa.Table) -> str:
    """``"rl"`` for verl's RL layout (it has ``reward_model``), else ``"sft"``."""
    return "rl" if "reward_model" in table.column_names else "sft"


def validate_files(files, kind: str | None = None, *, columns: SFTColumns = SFTColumns(), tokenizer=None,
                   max_length: int | None = None, allow_duplicates: bool = False):
    """``(tables, problems)`` for ``files`` (one path or a list); ``kind``: "sft", "rl" or None (per file).

    ``max_length`` bounds the whole rendered chat for SFT and the rendered prompt for RL. A file that
    cannot be read is a problem too; its table is left out. Duplicates are problems with ``warning``
    set (``allow_duplicates``: not looked for).
    """
    if kind not in (None, "sft", "rl"):
        raise ValueError(f"kind={kind!r}: expected 'sft', 'rl' or None")
    tables, problems = [], []
    seen = None if allow_duplicates else {}
    for path in as_file_list(files):
        try:
            table = read_parquet(path)
        except DataError as error:
            problems.append(Problem(path, None, None, str(error).removeprefix(f"{path}: ")))
            continue
        tables.append((path, table))
        if table.num_rows == 0:
            problems.append(Problem(path, None, None, "no rows"))
            continue
        if (kind or detect_kind(table)) == "rl":
            problems += validate_rl_rows(table, path, tokenizer=tokenizer, max_prompt_length=max_length, seen=seen)
        else:
            problems += validate_sft_rows(table, path, columns=columns, tokenizer=tokenizer,
                                          max_length=max_length, seen=seen)
    return tables, problems


def check_files(files, kind: str | None = None, **options) -> list[tuple[str, pa.Table]]:
    """``validate_files``, raising ``DataError`` with the report if anything is wrong (duplicates are
    logged as a warning); returns the tables."""
    tables, problems = validate_files(files, kind, **options)
    raise_if_problems(problems)
    return tables
