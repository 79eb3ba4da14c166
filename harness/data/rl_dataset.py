"""RL prompts: verl-layout rows -> prompt token ids through the chat template, with what scoring needs.

    dataset = load_rl_dataset(cfg.data.train_files, tokenizer, max_prompt_length=256)
    dataset.prompts[i].prompt_ids, .data_source, .ground_truth, .extra_info, .index

verl keys: ``data.max_prompt_length`` -> ``max_prompt_length``; ``data.filter_overlong_prompts=true``
-> ``overlong="filter"`` (longer prompts are dropped and counted in ``stats["filtered_overlong"]``),
else ``data.truncation``: ``"error"`` (each is named in a ``DataError``), ``"left"`` (keep the last
tokens), ``"right"`` (the first), ``"middle"`` (both ends, as verl cuts them); truncated prompts are
counted in ``stats["truncated"]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.data.chat_render import render
from harness.data.formats import DataError
from harness.data.validation import Problem, check_files, raise_if_problems

OVERLONG_MODES = ("filter", "error", "left", "right", "middle")


def truncate(ids: list, limit: int, mode: str) -> list:
    """``ids`` cut to ``limit`` tokens the way verl cuts prompts."""
    if mode == "left":
        return ids[-limit:]
    if mode == "right":
        return ids[:limit]
    head = limit // 2
    return ids[:head] + ids[len(ids) - (limit - head):]


@dataclass(frozen=True)
class RLPrompt:
    index: int  # 0-based position over all files, in order (stable across runs: a sample's uid base)
    file: str
    row: int  # 0-based row in ``file``
    prompt: list[dict]
    prompt_ids: list[int]
    data_source: str
    ground_truth: str
    extra_info: dict | None


@dataclass
class RLDataset:
    prompts: list[RLPrompt]
    stats: dict = field(default_factory=dict)  # rows, filtered_overlong

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, index: int) -> RLPrompt:
        return self.prompts[index]


def load_rl_dataset(files, tokenizer, *, max_prompt_length: int, overlong: str = "filter",
                    allow_duplicates: bool = False) -> RLDataset:
    """Validates ``files`` (one path or a list; ``DataError`` lists every problem) and tokenizes prompts
    with ``add_generation_prompt=True``."""
    if overlong not in OVERLONG_MODES:
        raise ValueError(f"overlong={overlong!r}: expected one of {', '.join(OVERLONG_MODES)}")
    tables = check_files(files, "rl", allow_duplicates=allow_duplicates)
    prompts, problems, rows_seen, filtered, truncated = [], [], 0, 0, 0
    for path, table in tables:
        records = table.to_pylist()
        chats = [[{"role": m["role"], "content": m["content"]} for m in record["prompt"]] for record in records]
        encoded = tokenizer(render(tokenizer, chats, add_generation_prompt=True), add_special_tokens=False,
                            return_attention_mask=False)["input_ids"] if records else []
        for row, (record, chat, ids) in enumerate(zip(records, chats, encoded)):
            index = rows_seen + row
            if len(ids) > max_prompt_length and overlong in ("left", "right", "middle"):
                ids = truncate(list(ids), max_prompt_length, overlong)
                truncated += 1
            elif len(ids) > max_prompt_length:
                filtered += 1
                problems.append(Problem(path, row, "prompt", f"{len(ids)} tokens, over max_prompt_length="
                                        f"{max_prompt_length} (or set data.filter_overlong_prompts=true, or "
                                        "data.truncation=left|right|middle)"))
                continue
            prompts.append(RLPrompt(index, path, row, chat, list(ids), record["data_source"],
                                    str(record["reward_model"]["ground_truth"]), record.get("extra_info")))
        rows_seen += len(records)
    if overlong == "error":
        raise_if_problems(problems)
    if not prompts:
        raise DataError(f"no prompt of {', '.join(path for path, _ in tables)} fits max_prompt_length="
                        f"{max_prompt_length} ({filtered} filtered)")
    return RLDataset(prompts, {"rows": rows_seen, "filtered_overlong": filtered, "truncated": truncated})
