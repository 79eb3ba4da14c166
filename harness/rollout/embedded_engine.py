"""An in-process engine: transformers generation on the same HF-named tensors the SGLang engine gets.
For CPU quickstarts and debugging (no server, no second venv); slow, one prompt's samples at a time.

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
        completions = []
        for index, prompt in enumerate(prompts):
            completions += self._sample(index, list(prompt), sampling, n, stop, generator)
        return completions

    def _sample(self, index, prompt, sampling, n, stop, generator) -> List[Completion]:
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([prompt] * n, device=device)
        tokens, logprobs = [[] for _ in range(n)], [[] for _ in range(n)]
        finished = [None] * n
        past = None
        for _ in range(sampling.max_new_tokens):
            out = self.model(input_ids=input_ids, past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[:, -1].float()
            chosen = self._choose(logits, sampling, generator)
            chosen_logprobs = torch.log_softmax(logits, -1).gather(1, chosen[:, None])[:, 0]
            for i in range(n):
                if finished[i] is None:
                    tokens[i].append(int(chosen[i]))
                    logprobs[i].append(float(chosen_logprobs[i]))
                    if int(chosen[i]) in stop:
                        finished[i] = "stop"
            if all(finished):
                break
            input_ids = chosen[:, None]
        return [Completion(index, tokens[i], logprobs[i], finished[i] or "length", self.weight_version)
                for i in range(n)]

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
