"""Shared pieces of the data tests: the character tokenizer, parquet writers, the tools as functions."""
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.data.char_tokenizer import build_char_tokenizer
from tests.conversion.conftest import load_tool  # tools/ scripts as modules (main(argv) in-process)


def write_rows(path: Path, rows: list[dict], schema: pa.Schema | None = None) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def sft(prompt="How many a in abba?", response="2") -> dict:
    return {"prompt": prompt, "response": response}


def rl(prompt="How many a in abba?", truth="2", data_source="char_count") -> dict:
    return {"data_source": data_source, "prompt": [{"role": "user", "content": prompt}], "ability": "counting",
            "reward_model": {"style": "rule", "ground_truth": truth}, "extra_info": {"index": 0}}


@pytest.fixture(scope="session")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture(scope="session")
def prepare_data():
    return load_tool("prepare_data")
