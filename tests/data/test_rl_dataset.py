"""RL prompts: ids through the chat template with the generation prompt, over-long prompts filtered or refused."""
import pytest

from harness.data import DataError, load_rl_dataset
from tests.data.conftest import rl, write_rows


def test_prompt_ids_and_scoring_fields(tmp_path, tokenizer):
    first = write_rows(tmp_path / "a.parquet", [rl("How many a in abba?", "2"), rl("How many b in abba?", "2")])
    second = write_rows(tmp_path / "b.parquet", [{**rl("x in y?", "0"), "reward_model": {"style": "rule", "ground_truth": 0}}])
    dataset = load_rl_dataset([first, second], tokenizer, max_prompt_length=100)
    assert [(p.index, p.file, p.row) for p in dataset] == [(0, str(first), 0), (1, str(first), 1), (2, str(second), 0)]
    prompt = dataset[1]
    expected = tokenizer.apply_chat_template(prompt.prompt, tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(prompt.prompt_ids) == expected
    assert expected.endswith("<|im_start|>assistant\n")
    assert (prompt.data_source, prompt.ground_truth, prompt.extra_info) == ("char_count", "2", {"index": 0})
    assert dataset[2].ground_truth == "0"  # numeric ground truths arrive as strings, as scorers expect


def test_over_long_prompts_are_filtered_and_counted_or_refused(tmp_path, tokenizer):
    path = write_rows(tmp_path / "rl.parquet", [rl("short?"), rl("x" * 50), rl("also short?")])
    dataset = load_rl_dataset(path, tokenizer, max_prompt_length=40)
    assert [p.row for p in dataset] == [0, 2]
    assert dataset.stats == {"rows": 3, "filtered_overlong": 1, "truncated": 0}
    with pytest.raises(DataError, match=rf"{path} row 1, column 'prompt': 69 tokens, over max_prompt_length=40"):
        load_rl_dataset(path, tokenizer, max_prompt_length=40, overlong="error")
    with pytest.raises(DataError, match="no prompt .* fits max_prompt_length=5"):
        load_rl_dataset(path, tokenizer, max_prompt_length=5)


@pytest.mark.parametrize("mode", ["left", "right", "middle"])
def test_over_long_prompts_are_truncated_as_verl_cuts_them(tmp_path, tokenizer, mode):
    path = write_rows(tmp_path / "rl.parquet", [rl("short?"), rl("x" * 25 + "y" * 25)])
    whole = load_rl_dataset(path, tokenizer, max_prompt_length=100)[1].prompt_ids
    dataset = load_rl_dataset(path, tokenizer, max_prompt_length=40, overlong=mode)
    assert dataset.stats == {"rows": 2, "filtered_overlong": 0, "truncated": 1}
    expected = {"left": whole[-40:], "right": whole[:40], "middle": whole[:20] + whole[-20:]}[mode]
    assert dataset[1].prompt_ids == expected and dataset[0].prompt_ids == load_rl_dataset(
        path, tokenizer, max_prompt_length=100)[0].prompt_ids


def test_invalid_rows_are_refused_before_tokenizing(tmp_path, tokenizer):
    path = write_rows(tmp_path / "rl.parquet", [rl(), rl("q", truth="")])
    with pytest.raises(DataError, match=r"row 1, column 'reward_model': ground_truth is an empty string"):
        load_rl_dataset(path, tokenizer, max_prompt_length=100)
