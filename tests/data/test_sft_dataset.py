"""SFT tokenization (loss on the assistant's tokens only), token-budget micro-batches, collation."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.data import (DataError, SFTColumns, TokenBudgetSampler, collate, load_sft_dataset, token_budget_batches,
                          tokenize_sft)
from tests.data.conftest import sft, write_rows


def trained_text(tokenizer, ids, mask):
    return tokenizer.decode([token for token, keep in zip(ids, mask) if keep])


def test_prompt_is_the_user_turn_and_only_the_response_and_its_end_token_carry_loss(tokenizer):
    dataset = tokenize_sft([sft("How many r in strawberry?", "3")], tokenizer, max_length=100)
    ids, mask = dataset.input_ids[0], dataset.loss_mask[0]
    chat = [{"role": "user", "content": "How many r in strawberry?"}, {"role": "assistant", "content": "3"}]
    assert ids == tokenizer(tokenizer.apply_chat_template(chat, tokenize=False), add_special_tokens=False)["input_ids"]
    assert trained_text(tokenizer, ids, mask) == "3<|im_end|>"
    assert mask[-1] == 0  # the newline ChatML writes after <|im_end|> is template, not response


def test_every_assistant_turn_of_a_chat_carries_loss(tokenizer):
    row = {"messages": [{"role": "system", "content": "Count."}, {"role": "user", "content": "a in aa?"},
                        {"role": "assistant", "content": "2"}, {"role": "user", "content": "b in aa?"},
                        {"role": "assistant", "content": "0"}]}
    dataset = tokenize_sft([row], tokenizer, max_length=200)
    assert trained_text(tokenizer, dataset.input_ids[0], dataset.loss_mask[0]) == "2<|im_end|>0<|im_end|>"


def test_a_template_without_a_newline_after_the_end_token(tokenizer):
    """Llama-3-like: the turn ends with its end token; the mask finds it the same way."""
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}: {{ m['content'] }}<|im_end|>{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant: {% endif %}")
    llama_like = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, chat_template=template,
                                     eos_token="<|im_end|>", pad_token="<|endoftext|>")
    dataset = tokenize_sft([sft("q?", "42")], llama_like, max_length=100)
    assert trained_text(llama_like, dataset.input_ids[0], dataset.loss_mask[0]) == "42<|im_end|>"
    assert dataset.loss_mask[0][-1] == 1


def test_truncation_error_names_rows_and_right_truncation_counts(tmp_path, tokenizer):
    path = write_rows(tmp_path / "sft.parquet", [sft(), sft("x" * 60, "1"), sft("y", "z" * 60)])
    other = write_rows(tmp_path / "other.parquet", [sft("w" * 60, "1")])
    with pytest.raises(DataError) as error:
        load_sft_dataset([path, other], tokenizer, max_length=45)
    assert f"{path} row 1: 82 tokens, over max_length=45" in str(error.value)
    assert f"{path} row 2: 82 tokens" in str(error.value) and f"{other} row 0: 82 tokens" in str(error.value)
    dataset = load_sft_dataset([path], tokenizer, max_length=45, truncation="right")
    # Row 1 loses its whole response (dropped); row 2 keeps the start of its response.
    assert dataset.stats == {"rows": 3, "truncated": 2, "dropped_without_loss": 1}
    assert dataset.sources == [(str(path), 0), (str(path), 2)]
    assert all(len(ids) <= 45 for ids in dataset.input_ids)
    # verl's left truncation keeps the end of each chat: both responses survive, nothing is dropped.
    full = load_sft_dataset([path], tokenizer, max_length=100)
    left = load_sft_dataset([path], tokenizer, max_length=45, truncation="left")
    assert left.stats == {"rows": 3, "truncated": 2, "dropped_without_loss": 0}
    for ids, mask, whole, whole_mask in zip(left.input_ids, left.loss_mask, full.input_ids, full.loss_mask):
        assert ids == whole[-45:] and mask == whole_mask[-45:]
    with pytest.raises(ValueError, match="truncation='middle'"):
        tokenize_sft([sft()], tokenizer, max_length=40, truncation="middle")


def test_configurable_column_names(tmp_path, tokenizer):
    path = write_rows(tmp_path / "sft.parquet", [{"question": "q?", "answer": "a"}])
    dataset = load_sft_dataset(path, tokenizer, max_length=64, columns=SFTColumns("question", "answer"))
    assert trained_text(tokenizer, dataset.input_ids[0], dataset.loss_mask[0]) == "a<|im_end|>"


def test_collate_shifts_labels_and_aligns_the_loss_mask():
    examples = [{"input_ids": [5, 6, 7, 8], "loss_mask": [0, 0, 1, 1]}, {"input_ids": [9, 10], "loss_mask": [0, 1]}]
    batch = collate(examples, pad_token_id=0, pad_to_multiple_of=4)
    assert batch["tokens"].tolist() == [[5, 6, 7, 0], [9, 0, 0, 0]]
    assert batch["labels"].tolist() == [[6, 7, 8, 0], [10, 0, 0, 0]]
    assert batch["loss_mask"].tolist() == [[0, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3]] * 2
    assert batch["tokens"].dtype == torch.long and batch["loss_mask"].dtype == torch.float32


def test_budget_batches_cover_each_example_once_within_budget_and_waste_little():
    lengths = np.random.default_rng(0).integers(20, 400, size=2000)
    batches = token_budget_batches(lengths, 4096, seed=3, pad_to_multiple_of=8)
    assert sorted(i for batch in batches for i in batch) == list(range(2000))
    padded = sum(len(b) * (-(-(max(lengths[b]) - 1) // 8) * 8) for b in batches)
    assert all(len(b) * (-(-(max(lengths[b]) - 1) // 8) * 8) <= 4096 for b in batches)
    assert (lengths - 1).sum() / padded > 0.95  # sorted packing: under 5 % padding
    assert batches == token_budget_batches(lengths, 4096, seed=3, pad_to_multiple_of=8)
    assert batches != token_budget_batches(lengths, 4096, seed=3, epoch=1, pad_to_multiple_of=8)
    with pytest.raises(ValueError, match="example 7 needs 9999 tokens"):
        token_budget_batches([10] * 7 + [10000], 4096)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(2, 300), min_size=1, max_size=200), st.integers(304, 2000), st.integers(0, 5),
       st.sampled_from([None, 16, 50]), st.sampled_from([1, 8]))
def test_budget_batches_property(lengths, budget, seed, bucket_size, multiple):
    batches = token_budget_batches(lengths, budget, seed=seed, bucket_size=bucket_size, pad_to_multiple_of=multiple)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) * (-(-(max(lengths[i] for i in batch) - 1) // multiple) * multiple) <= budget


def test_sampler_resumes_at_the_same_micro_batch():
    lengths = np.random.default_rng(1).integers(5, 100, size=300)
    sampler = TokenBudgetSampler(lengths, 512, seed=7)
    uninterrupted = [batch for _ in range(2) for batch in sampler]
    first = TokenBudgetSampler(lengths, 512, seed=7)
    consumed = [batch for _, batch in zip(range(5), first)]
    resumed = TokenBudgetSampler(lengths, 512, seed=7)
    resumed.load_state_dict(first.state_dict())
    assert first.state_dict() == {"epoch": 0, "position": 5}
    assert consumed + [batch for _ in range(2) for batch in resumed] == uninterrupted


def test_a_prompt_given_as_a_chat_keeps_its_turns(tmp_path, tokenizer):
    prompt = [{"role": "system", "content": "Answer with a number."}, {"role": "user", "content": "a in aa?"}]
    path = write_rows(tmp_path / "sft.parquet", [{"prompt": prompt, "response": "2"}])
    dataset = load_sft_dataset(path, tokenizer, max_length=100)
    text = tokenizer.decode(dataset.input_ids[0])
    assert text.startswith("<|im_start|>system\nAnswer with a number.<|im_end|>\n<|im_start|>user\na in aa?")
    assert trained_text(tokenizer, dataset.input_ids[0], dataset.loss_mask[0]) == "2<|im_end|>"
