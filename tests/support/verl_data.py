"""Parquet files in verl's own layouts, written the way its preprocessors write them (by hand here:
verl is not installed), with the repeated rows real datasets have.

- char_count (verl-recipe char_count/create_dataset.py): SFT rows are one `messages` column (user:
  "How many {c} are there in word {w}?", assistant: one "x = c." / "x != c." line per letter, then
  "\\boxed{N} c in w."); RL rows are `prompt` (a one-turn chat), `data_source` "char_count", `ability`
  "other", `reward_model` {"style": "rule", "ground_truth": "N"}, `extra_info` {"response": ...}.
- gsm8k (verl examples/data_preprocess/gsm8k.py, gsm8k_multiturn_sft.py): RL rows `data_source`
  "openai/gsm8k", `prompt` (question + the "####" instruction), `ability` "math", `reward_model`
  {"style": "rule", "ground_truth": answer}, `extra_info` {"split", "index", "answer", "question"};
  SFT rows one `messages` column (the question with the instruction, then the worked answer).
"""
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

GSM8K_INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'


def char_count_example(rng: random.Random, min_length: int = 3, max_length: int = 5):
    length = rng.randint(min_length, max_length)
    count = rng.randint(1, length)
    target = chr(97 + rng.randint(0, 25))
    letters = [target] * count
    while len(letters) < length:
        letter = chr(97 + rng.randint(0, 25))
        if letter != target:
            letters.append(letter)
    rng.shuffle(letters)
    word = "-".join(letters)
    steps = [f"{letter} {'=' if letter == target else '!='} {target}." for letter in letters]
    return f"How many {target} are there in word {word}?", "\n".join(steps + [f"\\boxed{{{count}}} {target} in {word}."]), count


def write(path: Path, rows: list) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def char_count_files(directory: Path, count: int = 48, repeats: int = 3, seed: int = 0) -> dict:
    """sft/{train,test}.parquet and rl/{train,test}.parquet as create_dataset.py lays them out; the
    last `repeats` training rows repeat earlier ones."""
    rng = random.Random(seed)
    examples = {}
    while len(examples) < count:  # distinct, so the repeats below are the only ones
        example = char_count_example(rng)
        examples.setdefault(example[0], example)
    examples = list(examples.values())
    train, test = examples[: count * 3 // 4], examples[count * 3 // 4:]
    train += train[:repeats]
    paths = {}
    for split, part in (("train", train), ("test", test)):
        for kind in ("sft", "rl"):
            (directory / kind).mkdir(parents=True, exist_ok=True)
        paths[f"sft_{split}"] = write(directory / "sft" / f"{split}.parquet", [
            {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]}
            for prompt, response, _ in part])
        paths[f"rl_{split}"] = write(directory / "rl" / f"{split}.parquet", [
            {"prompt": [{"role": "user", "content": prompt}], "data_source": "char_count", "ability": "other",
             "reward_model": {"style": "rule", "ground_truth": str(answer)}, "extra_info": {"response": response}}
            for prompt, response, answer in part])
    return paths


def gsm8k_rl_rows(split: str, count: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    pairs = rng.sample([(a, b) for a in range(1, 10) for b in range(1, 10)], count)  # distinct questions
    rows = []
    for index, (a, b) in enumerate(pairs):
        question = f"Tom has {a} apples and buys {b} more. How many apples does he have?"
        answer = f"Tom has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"
        rows.append({"data_source": "openai/gsm8k",
                     "prompt": [{"role": "user", "content": f"{question} {GSM8K_INSTRUCTION}"}],
                     "ability": "math", "reward_model": {"style": "rule", "ground_truth": str(a + b)},
                     "extra_info": {"split": split, "index": index, "answer": answer, "question": question}})
    return rows


def gsm8k_sft_rows(count: int, seed: int = 0) -> list:
    return [{"messages": [row["prompt"][0], {"role": "assistant", "content": row["extra_info"]["answer"]}]}
            for row in gsm8k_rl_rows("train", count, seed)]


# verl-recipe char_count/reward_function.py's scorer, rewritten without verl (the last \boxed{...} is the answer).
CHAR_COUNT_REWARD_FUNCTION = '''
def char_count_reward_function(data_source, solution_str, ground_truth, extra_info=None):
    start = solution_str.rfind("\\\\boxed{")
    if start < 0:
        return 0
    end = solution_str.find("}", start)
    return 1 if end > 0 and solution_str[start + len("\\\\boxed{"):end] == ground_truth else 0
'''
