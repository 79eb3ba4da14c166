"""jsonl: a user's own jsonl, one example a line, as prompt/response pairs or chats.

    {"prompt": "...", "response": "...", "ground_truth": "..."}          (field names configurable)
    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}

SFT rows keep the layout (``prompt``/``response`` or ``messages``). RL rows take the prompt (or the
chat before its last assistant turn) as ``prompt``, and ``ground_truth`` from its field, else the
response (or that last assistant turn). ``data_source`` is the line's own field when it has one,
else ``--data-source``: it names the scorer evaluation uses (see ``harness.reward``).
Validation is ``--val-input`` when given, else ``--n-val`` lines held out at random (``--seed``).
"""
from __future__ import annotations

import random
from pathlib import Path

from harness.data.formats import CHAT_ROLES, DataError, chat, rl_row
from harness.data.preprocessors.common import read_jsonl, take

HELP = "a jsonl of prompt/response pairs or chats"


def add_arguments(parser) -> None:
    parser.add_argument("--input", required=True, help="jsonl file (the training split, or everything)")
    parser.add_argument("--val-input", help="jsonl file of the validation split (default: hold out --n-val)")
    parser.add_argument("--data-source", default="jsonl", help="data_source of lines without their own")
    parser.add_argument("--prompt-key", default="prompt")
    parser.add_argument("--response-key", default="response")
    parser.add_argument("--messages-key", default="messages")
    parser.add_argument("--ground-truth-key", default="ground_truth")


def _example(path: Path, line: int, record: dict, args, layout: str) -> tuple[dict, list[dict], str]:
    """``(sft row, rl prompt chat, rl ground truth)`` of one line, or a ``DataError`` naming it."""
    where = f"{path} line {line}"
    if layout == "messages":
        messages = record.get(args.messages_key)
        if not isinstance(messages, list) or not all(
                isinstance(m, dict) and m.get("role") in CHAT_ROLES and isinstance(m.get("content"), str)
                for m in messages):
            raise DataError(f"{where}, field '{args.messages_key}': expected a list of "
                            f"{{role: {'|'.join(CHAT_ROLES)}, content: string}}")
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None or last == 0:
            raise DataError(f"{where}, field '{args.messages_key}': needs an assistant turn after a prompt")
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        sft, prompt, response = {"messages": messages}, messages[:last], messages[last]["content"]
    else:
        prompt_text, response = record.get(args.prompt_key), record.get(args.response_key)
        if not isinstance(prompt_text, str) or not isinstance(response, str):
            raise DataError(f"{where}: needs string fields '{args.prompt_key}' and '{args.response_key}' "
                            f"(or a '{args.messages_key}' chat)")
        sft, prompt = {"prompt": prompt_text, "response": response}, chat(prompt_text)
    truth = record.get(args.ground_truth_key)
    return sft, prompt, response if truth is None else truth


def _examples(path: Path, args) -> list[tuple[int, dict, dict, list[dict], object]]:
    """``(line, record, sft row, rl prompt, ground truth)`` per line; every bad line is named at once."""
    lines = read_jsonl(path)
    layout = "messages" if args.messages_key in lines[0][1] else "prompt_response"
    examples, errors = [], []
    for line, record in lines:
        try:
            examples.append((line, record, *_example(path, line, record, args, layout)))
        except DataError as error:
            errors.append(str(error))
    if errors:
        more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise DataError("\n".join(errors[:20]) + more)
    return examples


def _rows(examples, split: str, args):
    sft, rl = [], []
    for index, (line, record, sft_row, prompt, truth) in enumerate(examples):
        sft.append(sft_row)
        rl.append(rl_row(record.get("data_source") or args.data_source, prompt, truth,
                         ability=record.get("ability") or "",
                         extra_info={"index": index, "split": split, "line": line}))
    return sft, rl


def build(args) -> dict[str, list[dict]]:
    path = Path(args.input)
    examples = _examples(path, args)
    if args.val_input:
        train, val = take(examples, args.n_train, args.seed), take(_examples(Path(args.val_input), args), args.n_val,
                                                                   args.seed)
    else:
        n_val = max(1, len(examples) // 20) if args.n_val is None else args.n_val
        if n_val >= len(examples):
            raise DataError(f"{path}: {len(examples)} lines cannot give {n_val} validation lines and a training split")
        order = list(range(len(examples)))
        random.Random(args.seed).shuffle(order)
        held_out = set(order[:n_val])
        val = [item for i, item in enumerate(examples) if i in held_out]
        train = take([item for i, item in enumerate(examples) if i not in held_out], args.n_train, args.seed)
    sft_train, rl_train = _rows(train, "train", args)
    sft_val, rl_val = _rows(val, "val", args)
    return {"sft_train": sft_train, "sft_val": sft_val, "rl_train": rl_train, "rl_val": rl_val}
