"""Bad input: every problem is reported with its file, 0-based row and column; good data passes."""
import pyarrow as pa
import pytest

from harness.data import DataError, check_files, load_rl_dataset, load_sft_dataset, validate_files
from harness.data.formats import SFTColumns, read_parquet_files
from tests.data.conftest import rl, sft, write_rows


def problems_of(*args, **kwargs):
    return [str(problem) for problem in validate_files(*args, **kwargs)[1]]


def test_good_files_pass_and_a_list_of_files_is_read_in_order(tmp_path):
    first = write_rows(tmp_path / "a.parquet", [sft("How many a in abba?"), sft("How many b in abba?")])
    second = write_rows(tmp_path / "b.parquet", [sft("How many c in cab?", "1")])
    tables = check_files([first, second], "sft")
    assert [(path, table.num_rows) for path, table in tables] == [(str(first), 2), (str(second), 1)]


def test_missing_file_and_unreadable_parquet_are_named(tmp_path):
    good = write_rows(tmp_path / "good.parquet", [sft()])
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"this is not parquet")
    missing = tmp_path / "nowhere" / "train.parquet"
    with pytest.raises(DataError) as error:
        read_parquet_files([good, broken, missing])
    assert f"{broken}: not a readable parquet file" in str(error.value)
    assert f"{missing}: data file does not exist" in str(error.value)
    # A training run reading data.train_files refuses the same way, before tokenizing anything.
    with pytest.raises(DataError, match="data file does not exist"):
        load_sft_dataset(str(missing), tokenizer=None, max_length=10)
    with pytest.raises(DataError, match="not a readable parquet file"):
        load_rl_dataset([broken], tokenizer=None, max_prompt_length=10)


def test_missing_columns(tmp_path):
    path = write_rows(tmp_path / "sft.parquet", [{"question": "q", "response": "r"}])
    assert problems_of(path, "sft") == [
        f"{path}: missing columns: expected 'prompt' and 'response', or 'messages'; found question, response"]
    assert problems_of(path, "sft", columns=SFTColumns(prompt_key="question")) == []
    rl_path = write_rows(tmp_path / "rl.parquet", [{"data_source": "x", "prompt": [{"role": "user", "content": "q"}]}])
    assert problems_of(rl_path, "rl") == [
        f"{rl_path}, column 'reward_model': missing column (RL data needs data_source, prompt, reward_model)"]


def test_wrong_column_types(tmp_path):
    path = write_rows(tmp_path / "sft.parquet", [{"prompt": "q", "response": 3}])
    assert problems_of(path, "sft") == [f"{path}, column 'response': has type int64, expected string"]
    rl_path = write_rows(tmp_path / "rl.parquet", [{**rl(), "prompt": "a plain string", "reward_model": {"answer": "2"}}])
    assert problems_of(rl_path, "rl") == [
        f"{rl_path}, column 'prompt': has type string, expected a list of {{role: string, content: string}}",
        f"{rl_path}, column 'reward_model': has type struct<answer: string>, expected a struct with "
        "ground_truth (string or number)"]


def test_every_empty_or_missing_value_is_reported_with_its_row(tmp_path):
    rows = [sft(), sft("", "1"), sft("How many b in b?", "  "), {"prompt": None, "response": "1"}]
    path = write_rows(tmp_path / "sft.parquet", rows)
    assert problems_of(path, "sft") == [
        f"{path} row 1, column 'prompt': empty string",
        f"{path} row 2, column 'response': empty string",
        f"{path} row 3, column 'prompt': missing value",
    ]
    rl_rows = [rl(), rl(truth=""), {**rl("q2"), "prompt": [{"role": "robot", "content": "hi"}]},
               {**rl("q3"), "data_source": None}, {**rl("q4"), "prompt": []}]
    rl_path = write_rows(tmp_path / "rl.parquet", rl_rows)
    assert problems_of(rl_path, "rl") == [
        f"{rl_path} row 1, column 'reward_model': ground_truth is an empty string",
        f"{rl_path} row 2, column 'prompt': message 0 has role 'robot', expected one of system, user, assistant, tool",
        f"{rl_path} row 3, column 'data_source': missing value",
        f"{rl_path} row 4, column 'prompt': empty chat list",
    ]


def test_chat_rows(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
            {"messages": [{"role": "user", "content": "only a question"}]},
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}]
    path = write_rows(tmp_path / "chat.parquet", rows)
    assert problems_of(path, "sft") == [
        f"{path} row 1, column 'messages': no assistant message (nothing to train on)",
        f"{path} row 2, column 'messages': message 1 (assistant) content: empty string",
    ]


def test_duplicates_are_a_warning_with_a_count_not_an_error(tmp_path, caplog):
    first = write_rows(tmp_path / "a.parquet", [sft(), sft("other"), sft()])
    second = write_rows(tmp_path / "b.parquet", [sft("other")])
    problems = validate_files([first, second], "sft")[1]
    assert [str(p) for p in problems] == [f"{first} row 2: duplicate of row 0",
                                         f"{second} row 0: duplicate of {first} row 1"]
    assert all(p.warning for p in problems)
    assert problems_of([first, second], "sft", allow_duplicates=True) == []
    # Training data with repeats loads (verl trains on it), and says how many repeats it kept.
    with caplog.at_level("WARNING"):
        tables = check_files([first, second], "sft")
    assert [table.num_rows for _, table in tables] == [3, 1]
    assert f"2 duplicate row(s) kept (first: {first} row 2: duplicate of row 0)" in caplog.text


def test_over_long_rows_after_the_chat_template(tmp_path, tokenizer):
    path = write_rows(tmp_path / "sft.parquet", [sft(), sft("How many a in " + "a" * 100 + "?", "100")])
    problems = problems_of(path, "sft", tokenizer=tokenizer, max_length=64)
    # One token per character and per special token: 1 + len("user\n") + 115 + 2 + 1 + len("assistant\n") + 3 + 2.
    assert problems == [f"{path} row 1: the rendered chat is 139 tokens, over the limit of 64"]
    rl_path = write_rows(tmp_path / "rl.parquet", [rl(), rl("x" * 80)])
    assert problems_of(rl_path, "rl", tokenizer=tokenizer, max_length=64) == [
        f"{rl_path} row 1: the rendered prompt is 99 tokens, over the limit of 64"]


def test_report_shows_the_first_twenty_problems_and_counts_the_rest(tmp_path):
    path = write_rows(tmp_path / "sft.parquet", [sft(f"q{i}", "") for i in range(25)])
    with pytest.raises(DataError) as error:
        check_files(path, "sft")
    lines = str(error.value).splitlines()
    assert lines[0] == "25 problem(s) in the data (rows are 0-based):"
    assert lines[1] == f"  {path} row 0, column 'response': empty string"
    assert lines[-1] == "  ... and 5 more" and len(lines) == 22


def test_all_null_column_and_kind_detection(tmp_path):
    path = write_rows(tmp_path / "sft.parquet", [{"prompt": "q", "response": None}],
                      schema=pa.schema([("prompt", pa.string()), ("response", pa.null())]))
    assert problems_of(path) == [f"{path} row 0, column 'response': missing value"]
    rl_path = write_rows(tmp_path / "rl.parquet", [rl()])
    assert problems_of(rl_path) == []  # detected as RL by its reward_model column


def test_verl_layouts_validate_as_verl_writes_them(tmp_path, prepare_data, capsys, tokenizer):
    """char_count's create_dataset.py and gsm8k's preprocessors' files (tests/support/verl_data.py), with
    repeated rows: `prepare_data.py validate` passes them with a warning line and a count, and they load
    for training."""
    from tests.support.verl_data import char_count_files, gsm8k_rl_rows, gsm8k_sft_rows, write

    files = char_count_files(tmp_path / "char_count", repeats=3)
    gsm8k_rl = write(tmp_path / "gsm8k_rl.parquet", gsm8k_rl_rows("train", 6) + gsm8k_rl_rows("train", 6)[:2])
    gsm8k_sft = write(tmp_path / "gsm8k_sft.parquet", gsm8k_sft_rows(6))
    for paths, repeats in (([files["sft_train"]], 3), ([files["rl_train"]], 3), ([gsm8k_rl], 2), ([gsm8k_sft], 0)):
        assert prepare_data.main(["validate", *map(str, paths)]) == 0
        err = capsys.readouterr().err
        assert (f"warning: {repeats} duplicate row(s) kept" in err) if repeats else err == ""
    assert len(load_sft_dataset(files["sft_train"], tokenizer, max_length=512)) == 39
    assert len(load_rl_dataset([files["rl_train"], gsm8k_rl], tokenizer, max_prompt_length=512)) == 39 + 8
    assert len(load_sft_dataset(gsm8k_sft, tokenizer, max_length=512)) == 6
