"""An in-process engine: transformers generation on the same HF-named tensors the SGLang engine gets.
For CPU quickstarts, evaluation and debugging (no server, no second venv). Samples are generated in
batches of ``batch_size`` sequences, sorted by prompt length and left-padded, with a KV cache.

Log-probs are those of the unscaled model distribution (log_softmax of the raw logits), like
SGLang's default, so the trainer's importance ratios mean the same with either engine.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from harness.rollout.base import (Completion, RolloutEngine, SamplingParams, WeightStream, Weights,
                                  check_against)
from harness.config.rollout import RolloutConfig


class EmbeddedEngine(RolloutEngine):
    def __init__(self, config: RolloutConfig, model=None):
        """``model``: an HF causal LM already built (else loaded from ``config.model_path``)."""
        from transformers import AutoModelForCausalLM

        self.config = config
        dtype = getattr(torch, config.dtype)
        self.model = model if model is not None else AutoModelForCausalLM.from_pretrained(config.model_path, dtype=dtype)
        self.model.eval()
        self.weight_version: Optional[str] = None
        self.eos_token_id = self.model.generation_config.eos_token_id if self.model.generation_config else None

    @torch.no_grad()
    def generate(self, prompts, sampling: SamplingParams, n: int = 1) -> List[Completion]:
        generator = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
        stop = set(sampling.stop_token_ids)
        if not sampling.ignore_eos and self.eos_token_id is not None:
            stop |= set(self.eos_token_id if isinstance(self.eos_token_id, list) else [self.eos_token_id])
        rows = [index for index in range(len(prompts)) for _ in range(n)]  # prompt-major, as the interface says
        order = sorted(range(len(rows)), key=lambda row: len(prompts[rows[row]]))  # less padding per batch
        completions: List[Optional[Completion]] = [None] * len(rows)
        for start in range(0, len(order), self.config.batch_size):
            batch = order[start:start + self.config.batch_size]
            sampled = self._sample([rows[row] for row in batch], prompts, sampling, stop, generator)
            for row, completion in zip(batch, sampled):
                completions[row] = completion
        return completions

    def _sample(self, indices, prompts, sampling, stop, generator) -> List[Completion]:
        """One batch: prompts left-padded (masked, positions counted from each prompt's first token)."""
        device = next(self.model.parameters()).device
        count, width = len(indices), max(len(prompts[i]) for i in indices)
        input_ids = torch.zeros(count, width, dtype=torch.long)
        attention = torch.zeros(count, width, dtype=torch.long)
        for row, index in enumerate(indices):
            prompt = list(prompts[index])
            input_ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            attention[row, width - len(prompt):] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        tokens, logprobs = [[] for _ in range(count)], [[] for _ in range(count)]
        finished = [None] * count
        past = None
        for _ in range(sampling.max_new_tokens):
            out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                             past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[:, -1].float()
            chosen = self._choose(logits, sampling, generator)
            chosen_logprobs = torch.log_softmax(logits, -1).gather(1, chosen[:, None])[:, 0]
            for row, (token, logprob) in enumerate(zip(chosen.tolist(), chosen_logprobs.tolist())):
                if finished[row] is None:
                    tokens[row].append(token)
                    logprobs[row].append(logprob)
                    if token in stop:
                        finished[row] = "stop"
            if all(finished):
                break
            input_ids = chosen[:, None]
            attention = torch.cat([attention, attention.new_ones(count, 1)], dim=1)
            positions = positions[:, -1:] + 1
        return [Completion(index, tokens[row], logprobs[row], finished[row] or "length", self.weight_version)
                for row, index in enumerate(indices)]

    @staticmethod
    def _choose(logits, sampling: SamplingParams, generator) -> torch.Tensor:
        if sampling.temperature == 0:
            return logits.argmax(-1)
        logits = logits / sampling.temperature
        if sampling.top_k > 0:
            kth = logits.topk(min(sampling.top_k, logits.shape[-1]), -1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, -1)
        if sampling.top_p < 1.0:
            sorted_probs, order = probs.sort(-1, descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs > sampling.top_p
            probs = probs.scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
        return torch.multinomial(probs, 1, generator=generator)[:, 0]

    @torch.no_grad()
    def score(self, sequences) -> List[List[float]]:
        device = next(self.model.parameters()).device
        scores = []
        for sequence in sequences:
            ids = torch.tensor([list(sequence)], device=device)
            logprobs = torch.log_softmax(self.model(input_ids=ids).logits[0, :-1].float(), -1)
            scores.append(logprobs.gather(1, ids[0, 1:, None])[:, 0].tolist())
        return scores

    @torch.no_grad()
    def update_weights(self, weights: Weights, version) -> None:
        """Checks every name and shape (the whole manifest first, when given) before copying any."""
        params = self.model.state_dict()
        expected = {name: tuple(t.shape) for name, t in params.items()}
        if isinstance(weights, WeightStream):
            for info in weights.manifest:
                check_against(expected, info.name, info.shape)
        received = []
        for name, tensor in weights:
            check_against(expected, name, tensor.shape)
            received.append((name, tensor))
        for name, tensor in received:
            params[name].copy_(tensor)
        self.weight_version = str(version)

    def health(self) -> dict:
        return {"healthy": True, "weight_version": self.weight_version}

    def shutdown(self) -> None:
        pass
