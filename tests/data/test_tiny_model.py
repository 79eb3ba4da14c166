"""tools/make_tiny_model.py: a random tiny model that transformers loads, with the character tokenizer."""
import pytest
import torch

from harness.data.char_tokenizer import build_char_tokenizer
from tests.conversion.conftest import load_tool

make_tiny_model_tool = load_tool("make_tiny_model")
CHAT = [{"role": "user", "content": "How many a in banana?"}]


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "llama"])
def test_saved_model_loads_and_generates(tmp_path, arch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = make_tiny_model_tool.make_tiny_model(arch, tmp_path / arch, tie_word_embeddings=arch == "qwen3")
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    config = model.config
    assert type(model).__name__ == {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                                    "llama": "LlamaForCausalLM"}[arch]
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == \
           (64, 4, 8, 2)
    assert config.vocab_size == len(tokenizer) == 259
    assert (config.eos_token_id, config.pad_token_id, config.bos_token_id) == (2, 0, 0)
    assert config.tie_word_embeddings == (arch == "qwen3") and config.max_position_embeddings == 512
    assert model.generation_config.eos_token_id == [2, 0]

    # transformers rebuilds a qwen2 model's tokenizer as Qwen2Tokenizer: it must tokenize identically.
    text = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == build_char_tokenizer()(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids)[:6] == ["<|im_start|>", "u", "s", "e", "r", "Ċ"]
    output = model.generate(torch.tensor([ids]), max_new_tokens=4, do_sample=False)
    assert output.shape[1] > len(ids)
    assert isinstance(tokenizer.decode(output[0, len(ids):]), str)


def test_character_tokenizer_round_trips_any_text():
    tokenizer = build_char_tokenizer()
    text = "How many r in strawberry?\n\tÜber 1,200 — naïve 東京"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(tokenizer("strawberry", add_special_tokens=False)["input_ids"]) == len("strawberry")


def test_command_line(tmp_path, capsys):
    assert make_tiny_model_tool.main(["--arch", "llama", "--size", "small", "--dtype", "bfloat16",
                                      "--out", str(tmp_path / "m")]) == 0
    assert "LlamaForCausalLM, hidden 128, 4 layers, vocab 259, bfloat16" in capsys.readouterr().out
    assert (tmp_path / "m" / "chat_template.jinja").exists()
    # A non-empty directory is kept unless --force; nothing is left half-written beside it.
    assert make_tiny_model_tool.main(["--arch", "qwen2", "--out", str(tmp_path / "m")]) == 2
    assert "is not empty (give --force to replace it)" in capsys.readouterr().err
    assert make_tiny_model_tool.main(["--arch", "qwen2", "--out", str(tmp_path / "m"), "--force"]) == 0
    assert "Qwen2ForCausalLM" in (tmp_path / "m" / "config.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_compact_template_marks_only_the_assistant_turn(tmp_path):
    """The quickstart's template: the RL prompt is the SFT example's prefix, the loss covers the answer and
    its end token, and the saved tokenizer (rebuilt by transformers) renders and tokenizes the same way."""
    from transformers import AutoTokenizer

    from harness.data import tokenize_sft

    out = make_tiny_model_tool.make_tiny_model("qwen2", tmp_path / "m", chat_template="compact")
    tokenizer = AutoTokenizer.from_pretrained(out)
    built = build_char_tokenizer(chat_template="compact")
    prompt = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert prompt == built.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True) == \
           "How many a in banana?\n<|im_start|>"
    example = tokenize_sft([{"prompt": CHAT[0]["content"], "response": "3"}], tokenizer, max_length=64)
    ids, mask = example.input_ids[0], example.loss_mask[0]
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert ids[:len(prompt_ids)] == prompt_ids and len(ids) == len(prompt_ids) + 2
    assert tokenizer.decode([t for t, keep in zip(ids, mask) if keep]) == "3<|im_end|>"
    with pytest.raises(ValueError, match="--chat-template 'plain'"):
        make_tiny_model_tool.make_tiny_model("qwen2", tmp_path / "x", chat_template="plain")
