"""Per-token log-probs, entropy and values from Megatron outputs, in response coordinates.

A sequence is its prompt (length P) followed by its response, right-padded; the logits at position
t predict token t+1, so response token j is scored at position P - 1 + j. Log-probs are those of the
unscaled distribution over the real vocabulary (Megatron's padded vocabulary columns are masked), as
the rollout engines report them, so trainer and rollout log-probs compare one to one.
"""
import torch

MASKED_LOGIT = -1e30  # finite, so exp() is 0 and 0 * logit stays 0 in the entropy


def response_positions(prompt_lengths: torch.Tensor, response_length: int, seq_length: int) -> torch.Tensor:
    steps = torch.arange(response_length, device=prompt_lengths.device)
    return (prompt_lengths[:, None] - 1 + steps[None]).clamp(max=seq_length - 1)


def to_response(per_position: torch.Tensor, prompt_lengths: torch.Tensor, response_length: int) -> torch.Tensor:
    """[batch, seq] -> [batch, response_length] (what position P - 1 + j holds)."""
    index = response_positions(prompt_lengths, response_length, per_position.shape[1])
    return torch.take_along_dim(per_position, index, dim=1)


def _real_vocab_logits(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """float32 logits with this TP rank's padded-vocabulary columns masked."""
    from megatron.core import parallel_state

    logits = logits.float()
    local = logits.shape[-1]
    first = parallel_state.get_tensor_model_parallel_rank() * local
    if first + local <= vocab_size:
        return logits
    padded = torch.arange(first, first + local, device=logits.device) >= vocab_size
    return logits.masked_fill(padded, MASKED_LOGIT)


def _tp_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum over tensor-parallel ranks; the backward passes the gradient through unchanged (every
    rank computes the same loss from the sum; torch's autograd all_reduce would sum it again)."""
    from megatron.core.tensor_parallel.mappings import reduce_from_tensor_model_parallel_region

    return reduce_from_tensor_model_parallel_region(value)


def vocab_parallel_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax over the full (TP-sharded) vocabulary; differentiable."""
    from megatron.core import parallel_state

    maximum = logits.max(-1).values.detach()
    if parallel_state.get_tensor_model_parallel_world_size() > 1:
        torch.distributed.all_reduce(maximum, op=torch.distributed.ReduceOp.MAX,
                                     group=parallel_state.get_tensor_model_parallel_group())
    exp = torch.exp(logits - maximum[..., None])
    total = _tp_sum(exp.sum(-1))
    weighted = _tp_sum((exp * logits).sum(-1))
    return torch.log(total) + maximum - weighted / total


def token_log_probs(logits: torch.Tensor, tokens: torch.Tensor, prompt_lengths: torch.Tensor,
                    response_length: int, vocab_size: int, with_entropy: bool = False, entropy_grad: bool = False):
    """(log_probs, entropy or None), both [batch, response_length], from [batch, seq, vocab/TP] logits.
    The entropy carries a gradient only with `entropy_grad` (an entropy bonus in the loss)."""
    from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

    logits = _real_vocab_logits(logits, vocab_size)
    labels = torch.roll(tokens, -1, dims=1)
    entropy = None
    if with_entropy and entropy_grad:
        entropy = to_response(vocab_parallel_entropy(logits), prompt_lengths, response_length)
        logits = logits.clone()  # the cross entropy works in place on its input
    elif with_entropy:
        with torch.no_grad():
            entropy = to_response(vocab_parallel_entropy(logits), prompt_lengths, response_length)
    log_probs = -vocab_parallel_cross_entropy(logits, labels)
    return to_response(log_probs, prompt_lengths, response_length), entropy


def token_values(output: torch.Tensor, prompt_lengths: torch.Tensor, response_length: int) -> torch.Tensor:
    """A value model's [batch, seq, 1] output -> [batch, response_length] values V(state before token j)."""
    return to_response(output[..., 0].float(), prompt_lengths, response_length)
