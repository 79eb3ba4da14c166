"""A character-level tokenizer with a Qwen-style ChatML chat template, built locally (no download).

It is a byte-level BPE without merges: every byte is one token, so each ASCII character (every
letter) is its own token and any text round-trips. Counting letters (the char_count task) is then
learnable by a tiny model, where merged letters make it hard (notes/quickstart.md). It has the
exact form of Qwen2's tokenizer (byte-level pre-tokenizer and decoder, NFC), because transformers
rebuilds a ``qwen2`` model's tokenizer as ``Qwen2Tokenizer`` from the vocabulary and merges: both
load paths then tokenize the same way.

Special tokens follow Qwen2.5-Instruct: ``<|im_end|>`` ends a turn and is the tokenizer's eos (so
generation stops there), ``<|endoftext|>`` pads.
"""
from __future__ import annotations

END_OF_TEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END)

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# The tiny quickstart model's template: only the assistant turn is marked (<|im_start|> opens it,
# <|im_end|> closes it), every other turn is its text and a newline. A char_count example is then
# ~27 tokens instead of ~45 with ChatML, so SFT and RL steps cost less; the roles of the other turns
# are not marked, which a model made for one-question tasks does not need.
COMPACT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}{{- '<|im_start|>' + message['content'] + '<|im_end|>' }}"
    "{%- else %}{{- message['content'] + '\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>' }}{%- endif %}"
)
CHAT_TEMPLATES = {"chatml": CHATML_TEMPLATE, "compact": COMPACT_TEMPLATE}


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-in for each byte 0..255, the symbols byte-level tokenizers store."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[byte] for byte in range(256)]


def build_char_tokenizer(model_max_length: int = 512, chat_template: str = "chatml"):
    """A ``PreTrainedTokenizerFast``: ids 0..2 are the special tokens, 3 + b is byte b;
    ``chat_template``: a name in ``CHAT_TEMPLATES``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate((*SPECIAL_TOKENS, *byte_symbols()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], continuing_subword_prefix="", end_of_word_suffix=""))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        unk_token=None,
        chat_template=CHAT_TEMPLATES[chat_template],
        clean_up_tokenization_spaces=False,
        model_max_length=model_max_length,
    )
