"""gsm8k: GSM8K from a local copy of its published jsonl (``question``, ``answer`` ending ``#### N``).

    python tools/prepare_data.py gsm8k --input grade-school-math/grade_school_math/data --out data/gsm8k

Rows as verl's ``examples/data_preprocess/gsm8k.py`` writes them: the instruction appended to the
question, ``data_source="openai/gsm8k"``, ground truth the number after ``####`` (commas removed).
SFT responses are the full worked answers. GSM8K's test split is the validation split.
"""
from __future__ import annotations

from pathlib import Path

from harness.data.formats import DataError, chat, rl_row
from harness.data.preprocessors.common import read_jsonl, take

HELP = "GSM8K from its local train.jsonl / test.jsonl"
DATA_SOURCE = "openai/gsm8k"
INSTRUCTION = "Let's think step by step and output the final answer after \"####\"."


def add_arguments(parser) -> None:
    parser.add_argument("--input", required=True, help="directory holding GSM8K's train.jsonl and test.jsonl")


def final_answer(answer: str) -> str | None:
    """The number after the last ``####``, without thousands separators; None when absent."""
    _, marker, tail = answer.rpartition("####")
    number = tail.strip().replace(",", "")
    return number if marker and number else None


def _rows(path: Path, split: str, count: int | None, seed: int) -> tuple[list[dict], list[dict]]:
    sft, rl = [], []
    for index, (line, record) in enumerate(take(read_jsonl(path), count, seed)):
        question, answer = record.get("question"), record.get("answer")
        if not isinstance(question, str) or not isinstance(answer, str):
            raise DataError(f"{path} line {line}: needs string fields 'question' and 'answer'")
        truth = final_answer(answer)
        if truth is None:
            raise DataError(f"{path} line {line}, field 'answer': no final answer after '####'")
        prompt = f"{question} {INSTRUCTION}"
        sft.append({"prompt": prompt, "response": answer})
        rl.append(rl_row(DATA_SOURCE, chat(prompt), truth, ability="math",
                         extra_info={"index": index, "split": split, "question": question, "answer": answer}))
    return sft, rl


def build(args) -> dict[str, list[dict]]:
    directory = Path(args.input)
    sft_train, rl_train = _rows(directory / "train.jsonl", "train", args.n_train, args.seed)
    sft_val, rl_val = _rows(directory / "test.jsonl", "test", args.n_val, args.seed)
    return {"sft_train": sft_train, "sft_val": sft_val, "rl_train": rl_train, "rl_val": rl_val}
