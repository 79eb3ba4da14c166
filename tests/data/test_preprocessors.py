"""The preprocessors and tools/prepare_data.py as users run them: four valid parquet files, or a clear error."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.data.preprocessors import char_count
from harness.reward import score

GSM8K_ANSWER = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")


def rows(directory, name):
    return pq.read_table(directory / f"{name}.parquet").to_pylist()


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_char_count_is_seeded_correct_and_splits_share_no_word(tmp_path, prepare_data, capsys):
    out = tmp_path / "cc"
    assert prepare_data.main(["char_count", "--out", str(out), "--n-train", "400", "--n-val", "50", "--seed", "3"]) == 0
    assert f"wrote {out / 'sft_train.parquet'} (400 rows)" in capsys.readouterr().out
    train, val = rows(out, "rl_train"), rows(out, "rl_val")
    assert (len(train), len(val), len(rows(out, "sft_val"))) == (400, 50, 50)
    first = train[0]
    assert first["data_source"] == "char_count" and first["ability"] == "counting"
    assert first["prompt"] == [{"role": "user", "content": f"{first['extra_info']['word']}: "
                                                           f"{first['extra_info']['letter']}?"}]
    assert not {r["extra_info"]["word"] for r in train} & {r["extra_info"]["word"] for r in val}
    for row, sft_row in zip(train, rows(out, "sft_train")):
        word, letter = row["extra_info"]["word"], row["extra_info"]["letter"]
        assert set(word) <= set("abcdefgh") and 3 <= len(word) <= 10
        assert sft_row == {"prompt": row["prompt"][0]["content"], "response": str(word.count(letter))}
        assert score("char_count", sft_row["response"], row["reward_model"]["ground_truth"]) == 1.0
    present = sum(r["extra_info"]["letter"] in r["extra_info"]["word"] for r in train) / len(train)
    assert 0.75 < present < 0.9
    assert char_count.generate(100, seed=3) == char_count.generate(100, seed=3) != char_count.generate(100, seed=4)


def test_char_count_demonstrations_for_short_words_only(tmp_path, prepare_data, capsys):
    """--sft-max-word-length: the SFT rows are the training prompts with short words; RL keeps every length."""
    out = tmp_path / "short"
    assert prepare_data.main(["char_count", "--out", str(out), "--n-train", "400", "--n-val", "50", "--seed", "3",
                              "--sft-max-word-length", "5"]) == 0
    train, demonstrations = rows(out, "rl_train"), rows(out, "sft_train")
    short = [r for r in train if len(r["extra_info"]["word"]) <= 5]
    assert 0 < len(short) < len(train) == 400 and max(len(r["extra_info"]["word"]) for r in train) == 10
    assert [d["prompt"] for d in demonstrations] == [r["prompt"][0]["content"] for r in short]
    assert all(len(d["prompt"].split(":")[0]) <= 5 for d in rows(out, "sft_val"))
    assert len(rows(out, "rl_val")) == 50
    with pytest.raises(SystemExit):
        prepare_data.main(["char_count", "--out", str(out), "--sft-max-word-length", "2"])
    assert "2: words have 3..10 letters" in capsys.readouterr().err


def test_gsm8k_from_its_published_jsonl(tmp_path, prepare_data, capsys):
    source = tmp_path / "gsm8k"
    source.mkdir()
    question = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. " \
               "How many clips did Natalia sell altogether in April and May?"
    write_jsonl(source / "train.jsonl", [{"question": question, "answer": GSM8K_ANSWER},
                                         {"question": "Big?", "answer": "So 1,200 in all.\n#### 1,200"},
                                         {"question": "Big?", "answer": "So 1,200 in all.\n#### 1,200"}])
    write_jsonl(source / "test.jsonl", [{"question": "Two?", "answer": "1+1=2\n#### 2"}])
    out = tmp_path / "out"
    assert prepare_data.main(["gsm8k", "--input", str(source), "--out", str(out)]) == 0
    # A repeated question is dropped (and said), so the written files pass validation.
    assert "dropped 1 row(s) of rl_train repeating an earlier row" in capsys.readouterr().out
    train = rows(out, "rl_train")
    assert train[0]["data_source"] == "openai/gsm8k"
    assert train[0]["prompt"][0]["content"].endswith('Let\'s think step by step and output the final answer after "####".')
    assert [r["reward_model"]["ground_truth"] for r in train] == ["72", "1200"]
    assert rows(out, "sft_train")[0]["response"] == GSM8K_ANSWER
    assert rows(out, "rl_val")[0]["extra_info"]["split"] == "test"
    assert score("openai/gsm8k", GSM8K_ANSWER, "72") == 1.0


def test_gsm8k_bad_lines_are_named(tmp_path, prepare_data, capsys):
    source = tmp_path / "gsm8k"
    source.mkdir()
    write_jsonl(source / "train.jsonl", [{"question": "q", "answer": "1\n#### 1"}, {"question": "q", "answer": "no marker"}])
    write_jsonl(source / "test.jsonl", [{"question": "q", "answer": "#### 1"}])
    assert prepare_data.main(["gsm8k", "--input", str(source), "--out", str(tmp_path / "out")]) == 2
    assert f"{source / 'train.jsonl'} line 2, field 'answer': no final answer after '####'" in capsys.readouterr().err
    (source / "train.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n{not json\n')
    assert prepare_data.main(["gsm8k", "--input", str(source), "--out", str(tmp_path / "out")]) == 2
    assert f"{source / 'train.jsonl'} line 2: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_jsonl_pairs_and_chats(tmp_path, prepare_data):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"q": f"question {i}", "a": f"answer {i}", "ground_truth": i}
                                                   for i in range(20)])
    out = tmp_path / "pairs"
    assert prepare_data.main(["jsonl", "--input", str(pairs), "--out", str(out), "--prompt-key", "q",
                              "--response-key", "a", "--n-val", "4", "--data-source", "mine"]) == 0
    train, val = rows(out, "rl_train"), rows(out, "rl_val")
    assert (len(train), len(val)) == (16, 4)
    assert {r["prompt"][0]["content"] for r in train + val} == {f"question {i}" for i in range(20)}
    assert train[0]["data_source"] == "mine" and train[0]["reward_model"]["ground_truth"].isdigit()
    assert set(rows(out, "sft_train")[0]) == {"prompt", "response"}

    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"}, {"role": "assistant", "content": "see you"}]
    chats = write_jsonl(tmp_path / "chats.jsonl", [{"messages": chat}, {"messages": chat[:2]}])
    val_file = write_jsonl(tmp_path / "val.jsonl", [{"messages": chat[2:]}])
    out = tmp_path / "chats"
    assert prepare_data.main(["jsonl", "--input", str(chats), "--val-input", str(val_file), "--out", str(out)]) == 0
    assert rows(out, "sft_train")[0] == {"messages": chat}
    first = rows(out, "rl_train")[0]
    assert first["prompt"] == chat[:3] and first["reward_model"]["ground_truth"] == "see you"


def test_jsonl_bad_chat_is_named(tmp_path, prepare_data, capsys):
    source = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}] * 3)
    assert prepare_data.main(["jsonl", "--input", str(source), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert all(f"{source} line {n}, field 'messages': needs an assistant turn after a prompt" in error for n in (1, 2, 3))


def test_validate_command_reports_every_problem_and_exits_non_zero(tmp_path, prepare_data, capsys, tokenizer):
    out = tmp_path / "cc"
    assert prepare_data.main(["char_count", "--out", str(out), "--n-train", "20", "--n-val", "5"]) == 0
    files = [str(out / f"{name}.parquet") for name in ("sft_train", "sft_val", "rl_train", "rl_val")]
    capsys.readouterr()
    assert prepare_data.main(["validate", *files]) == 0
    assert f"{files[0]}: 20 rows, columns prompt, response: ok" in capsys.readouterr().out

    bad = tmp_path / "bad.parquet"
    table = pq.read_table(files[0]).to_pylist()
    table[3]["response"], table[7]["prompt"] = "", "How many a in " + "a" * 50 + "?"
    pq.write_table(pa.Table.from_pylist(table), bad)
    tokenizer.save_pretrained(tmp_path / "tok")
    assert prepare_data.main(["validate", str(bad), "--tokenizer", str(tmp_path / "tok"), "--max-length", "60"]) == 1
    report = capsys.readouterr().err
    assert f"{bad} row 3, column 'response': empty string" in report
    assert f"{bad} row 7: the rendered chat is 87 tokens, over the limit of 60" in report
    assert prepare_data.main(["validate", str(tmp_path / "missing.parquet")]) == 1
    assert f"{tmp_path / 'missing.parquet'}: data file does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        prepare_data.main(["char_count", "--out", str(out), "--n-val", "0"])


def test_prepare_data_runs_as_a_script(tmp_path):
    import subprocess
    import sys

    from tests.conversion.conftest import ROOT

    done = subprocess.run([sys.executable, str(ROOT / "tools" / "prepare_data.py"), "char_count", "--out",
                           str(tmp_path), "--n-train", "10", "--n-val", "2"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rl_train.parquet", "rl_val.parquet",
                                                          "sft_train.parquet", "sft_val.parquet"]


def test_data_room_imports_without_torch_or_transformers():
    import subprocess
    import sys

    code = "import sys, harness.data.preprocessors; print('torch' in sys.modules, 'transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split() == ["False", "False"]
