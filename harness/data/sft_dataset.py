"""SFT data as token ids with a loss mask, token-budget micro-batches, and Megatron-shaped batches.

    dataset = load_sft_dataset(cfg.data.train_files, tokenizer, max_length=512)   # validates first
    sampler = TokenBudgetSampler(dataset.lengths, max_tokens_per_microbatch=4096, seed=0)
    for indices in sampler:                       # resumable: sampler.state_dict() / load_state_dict()
        batch = collate([dataset[i] for i in indices], pad_token_id=tokenizer.pad_token_id)
        # batch["tokens"], ["labels"], ["loss_mask"], ["position_ids"]: [b, s]

Each example is the chat rendered with the tokenizer's chat template (prompt = user turn, response =
assistant turn); ``loss_mask`` is 1 on the assistant's tokens including its end-of-turn token.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.data.chat_render import render_sft, sft_chat, tokenize_with_mask
from harness.data.formats import DataError, SFTColumns
from harness.data.validation import Problem, check_files, raise_if_problems

TRUNCATION_MODES = ("error", "left", "right")  # verl's: left keeps the end of a chat, right its start


@dataclass
class SFTDataset:
    """Tokenized examples; ``sources[i]`` is example i's ``(file, 0-based row)``."""

    input_ids: list[list[int]]
    loss_mask: list[list[int]]
    sources: list[tuple[str, int]]
    stats: dict = field(default_factory=dict)  # rows, truncated, dropped_without_loss

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.input_ids[index], "loss_mask": self.loss_mask[index]}

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter(map(len, self.input_ids), dtype=np.int64, count=len(self.input_ids))


def _tokenize(rows: list[dict], tokenizer, max_length: int, truncation: str, columns: SFTColumns,
              sources: list[tuple[str, int]]) -> tuple[SFTDataset, list[Problem]]:
    if truncation not in TRUNCATION_MODES:
        raise ValueError(f"truncation={truncation!r}: expected one of {', '.join(TRUNCATION_MODES)}")
    layout = columns.layout(rows[0]) if rows else "prompt_response"
    chats = [sft_chat(row, columns, layout) for row in rows]
    rendered = render_sft(tokenizer, chats, [f"{file} row {row}" for file, row in sources])
    all_ids, all_masks = tokenize_with_mask(tokenizer, rendered)
    too_long = [index for index, ids in enumerate(all_ids) if len(ids) > max_length]
    if truncation == "error":
        problems = [Problem(*sources[i], None, f"{len(all_ids[i])} tokens, over max_length={max_length} "
                            "(or set truncation='left' or 'right')") for i in too_long]
        if problems:
            return SFTDataset([], [], []), problems
    dataset = SFTDataset([], [], [], {"rows": len(rows), "truncated": len(too_long), "dropped_without_loss": 0})
    kept = slice(-max_length, None) if truncation == "left" else slice(None, max_length)
    for ids, mask, source in zip(all_ids, all_masks, sources):
        ids, mask = ids[kept], mask[kept]
        if not any(mask[1:]):  # the first token is never a label, so it cannot carry loss
            dataset.stats["dropped_without_loss"] += 1
            continue
        dataset.input_ids.append(ids)
        dataset.loss_mask.append(mask)
        dataset.sources.append(source)
    return dataset, []


def tokenize_sft(rows: list[dict], tokenizer, *, max_length: int, truncation: str = "error",
                 columns: SFTColumns = SFTColumns(), sources: list[tuple[str, int]] | None = None) -> SFTDataset:
    """Renders and tokenizes validated SFT rows (all in one layout: prompt/response or messages).

    ``truncation="error"`` raises ``DataError`` naming every row longer than ``max_length`` tokens;
    ``"left"`` / ``"right"`` cut them to their last / first ``max_length`` tokens, and drop (and count)
    those left without any loss token. ``sources``:
    ``(file, row)`` of each row, for messages (default ``("<rows>", i)``).
    """
    dataset, problems = _tokenize(rows, tokenizer, max_length, truncation, columns,
                                  sources or [("<rows>", row) for row in range(len(rows))])
    raise_if_problems(problems)
    return dataset


def load_sft_dataset(files, tokenizer, *, max_length: int, truncation: str = "error",
                     columns: SFTColumns = SFTColumns(), allow_duplicates: bool = False) -> SFTDataset:
    """Validates ``files`` (one path or a list), then tokenizes them; a ``DataError`` lists every problem
    of every file."""
    tables = check_files(files, "sft", columns=columns, allow_duplicates=allow_duplicates)
    dataset = SFTDataset([], [], [], {"rows": 0, "truncated": 0, "dropped_without_loss": 0})
    problems = []
    for path, table in tables:
        rows = table.to_pylist()
        part, part_problems = _tokenize(rows, tokenizer, max_length, truncation, columns,
                                        [(path, row) for row in range(len(rows))])
        problems += part_problems
        dataset.input_ids += part.input_ids
        dataset.loss_mask += part.loss_mask
        dataset.sources += part.sources
        for key, value in part.stats.items():
            dataset.stats[key] += value
    raise_if_problems(problems)
    if not len(dataset):
        raise DataError(f"no SFT example in {', '.join(path for path, _ in tables)} ({dataset.stats['rows']} rows, "
                        f"{dataset.stats['dropped_without_loss']} left without a response token by truncation)")
    return dataset


def _round_up(value, multiple: int):
    return -(-value // multiple) * multiple


def token_budget_batches(lengths, max_tokens_per_microbatch: int, *, seed: int = 0, epoch: int = 0,
                         shuffle: bool = True, bucket_size: int | None = None,
                         pad_to_multiple_of: int = 1) -> list[list[int]]:
    """Micro-batches of example indices whose collated size ``b * s`` stays within the budget.

    ``s`` is what ``collate`` makes: the longest example minus one (the label shift), rounded up to
    ``pad_to_multiple_of``. Examples are shuffled (seed, epoch), sorted by length inside buckets of
    ``bucket_size`` (None: the whole epoch) so a micro-batch holds similar lengths and padding stays
    small, packed greedily, and the micro-batches shuffled again. The same arguments give the same
    list, so a run resumes at micro-batch k by skipping k of them.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    sizes = _round_up(np.maximum(lengths - 1, 1), pad_to_multiple_of)
    over = np.flatnonzero(sizes > max_tokens_per_microbatch)
    if over.size:
        raise ValueError(f"example {over[0]} needs {sizes[over[0]]} tokens, more than max_tokens_per_microbatch="
                         f"{max_tokens_per_microbatch} ({over.size} such example(s))")
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)) if shuffle else np.arange(len(lengths))
    bucket_size = bucket_size or max(len(order), 1)
    batches: list[list[int]] = []
    for start in range(0, len(order), bucket_size):
        bucket = order[start:start + bucket_size]
        bucket = bucket[np.argsort(sizes[bucket], kind="stable")]
        batch: list[int] = []
        for index in bucket.tolist():  # ascending sizes: the newest example is the longest
            if batch and (len(batch) + 1) * sizes[index] > max_tokens_per_microbatch:
                batches.append(batch)
                batch = []
            batch.append(index)
        if batch:
            batches.append(batch)
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


class TokenBudgetSampler:
    """Iterates ``token_budget_batches`` epoch after epoch; its position survives a checkpoint.

    ``state_dict()`` gives ``{"epoch", "position"}`` (micro-batches already handed out this epoch);
    after ``load_state_dict`` iteration continues with the next micro-batch of the same order.
    """

    def __init__(self, lengths, max_tokens_per_microbatch: int, *, seed: int = 0, **options):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.max_tokens = max_tokens_per_microbatch
        self.seed, self.options = seed, options
        self.epoch, self.position = 0, 0

    def batches(self, epoch: int) -> list[list[int]]:
        return token_budget_batches(self.lengths, self.max_tokens, seed=self.seed, epoch=epoch, **self.options)

    def __len__(self) -> int:
        return len(self.batches(self.epoch))

    def __iter__(self):
        """The rest of the current epoch; the next ``iter`` starts the following epoch."""
        batches = self.batches(self.epoch)
        while self.position < len(batches):
            self.position += 1
            yield batches[self.position - 1]
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def collate(examples: list[dict], *, pad_token_id: int, pad_to_multiple_of: int = 1) -> dict[str, torch.Tensor]:
    """``[b, s]`` tensors for a Megatron GPT model: ``tokens`` = ids[:-1], ``labels`` = ids[1:],
    ``loss_mask`` (float, aligned with ``labels``), ``position_ids``; right-padded (padding has loss 0
    and, being after every real token, is never attended to under the causal mask)."""
    import torch  # here only: the rest of the data room (and tools/prepare_data.py) runs without torch

    if not examples:
        raise ValueError("collate needs at least one example")
    lengths = [len(example["input_ids"]) - 1 for example in examples]
    if min(lengths) < 1:
        raise ValueError("every example needs at least two tokens (one input, one label)")
    seq_len = _round_up(max(lengths), pad_to_multiple_of)
    tokens = np.full((len(examples), seq_len), pad_token_id, dtype=np.int64)
    labels = np.full((len(examples), seq_len), pad_token_id, dtype=np.int64)
    loss_mask = np.zeros((len(examples), seq_len), dtype=np.float32)
    for row, (example, length) in enumerate(zip(examples, lengths)):
        ids = np.asarray(example["input_ids"], dtype=np.int64)
        tokens[row, :length] = ids[:-1]
        labels[row, :length] = ids[1:]
        loss_mask[row, :length] = np.asarray(example["loss_mask"], dtype=np.float32)[1:]
    position_ids = np.broadcast_to(np.arange(seq_len, dtype=np.int64), tokens.shape).copy()
    return {"tokens": torch.from_numpy(tokens), "labels": torch.from_numpy(labels),
            "loss_mask": torch.from_numpy(loss_mask), "position_ids": torch.from_numpy(position_ids)}
