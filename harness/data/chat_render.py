"""Rows -> chats -> text through the tokenizer's chat template, and which characters carry the loss.

Rendering goes through text (``apply_chat_template(tokenize=False)``) and one batched call of the
fast tokenizer with offsets, so no Python loop runs over tokens. The loss of an assistant turn covers
its content and the template's end-of-turn token (``<|im_end|>`` in ChatML, ``<|eot_id|>`` in
Llama 3), not the whitespace the template writes after it nor the turn's header.
"""
from __future__ import annotations

import numpy as np

from harness.data.formats import DataError, SFTColumns


def sft_chat(row: dict, columns: SFTColumns, layout: str) -> list[dict]:
    """The chat of one SFT row: its messages, or the prompt as the user turn and the response as the
    assistant turn (a prompt given as a chat list keeps its turns)."""
    if layout == "messages":
        return [{"role": m["role"], "content": m["content"]} for m in row[columns.messages_key]]
    prompt = row[columns.prompt_key]
    turns = ([{"role": m["role"], "content": m["content"]} for m in prompt] if isinstance(prompt, list)
             else [{"role": "user", "content": prompt}])
    return turns + [{"role": "assistant", "content": row[columns.response_key]}]


def render(tokenizer, chats: list[list[dict]], add_generation_prompt: bool) -> list[str]:
    if not chats:
        return []
    if getattr(tokenizer, "chat_template", None) is None:
        raise DataError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat_template")
    return tokenizer.apply_chat_template(chats, tokenize=False, add_generation_prompt=add_generation_prompt)


def render_sft(tokenizer, chats: list[list[dict]], where: list[str]) -> list[tuple[str, list[tuple[int, int]]]]:
    """Each chat as ``(text, loss_spans)``: character ranges of the assistant turns (content + end token).

    ``where[i]`` names chat i in errors ("FILE row N"). A template whose rendering of the first turns
    is not a prefix of the whole chat's rendering cannot be masked this way and raises ``DataError``.
    """
    heads, throughs, owners = [], [], []  # per assistant turn: the chat before it, and through it
    for index, chat in enumerate(chats):
        for turn, message in enumerate(chat):
            if message["role"] == "assistant":
                heads.append(chat[:turn])
                throughs.append(chat[:turn + 1] if turn + 1 < len(chat) else None)  # None: the whole chat
                owners.append(index)
    full = render(tokenizer, chats, add_generation_prompt=False)
    heads = render(tokenizer, heads, add_generation_prompt=True)
    partial = iter(render(tokenizer, [c for c in throughs if c is not None], add_generation_prompt=False))
    turns = [full[owner] if chat is None else next(partial) for owner, chat in zip(owners, throughs)]
    spans: list[list[tuple[int, int]]] = [[] for _ in chats]
    for owner, head, through in zip(owners, heads, turns):
        text = full[owner]
        if not (text.startswith(head) and text.startswith(through) and through.startswith(head)):
            raise DataError(f"{where[owner]}: the chat template does not render the conversation's first "
                            "turns as a prefix of the whole, so the assistant tokens cannot be located")
        spans[owner].append((len(head), len(through.rstrip())))
    return list(zip(full, spans))


def tokenize_with_mask(tokenizer, rendered: list[tuple[str, list[tuple[int, int]]]]):
    """``(input_ids, loss_mask)`` lists per rendered chat: 1 where a token starts inside a loss span."""
    if not rendered:
        return [], []
    encoded = tokenizer([text for text, _ in rendered], add_special_tokens=False,
                        return_offsets_mapping=True, return_attention_mask=False)
    all_ids, all_masks = [], []
    for ids, offsets, (_, spans) in zip(encoded["input_ids"], encoded["offset_mapping"], rendered):
        starts = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)[:, 0]
        mask = np.zeros(len(ids), dtype=np.int64)
        for begin, end in spans:
            mask |= (starts >= begin) & (starts < end)
        all_ids.append(list(ids))
        all_masks.append(mask.tolist())
    return all_ids, all_masks


def token_lengths(tokenizer, texts: list[str]) -> np.ndarray:
    """Token count of each text (one batched call)."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    ids = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
