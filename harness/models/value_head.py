"""A scalar head in place of the LM head: the critic's values and the reward model's scores.

The GPTModel keeps its body; on the last pipeline stage `output_layer` becomes a `ValueHead`
(hidden -> 1, replicated over tensor-parallel ranks), so the model returns [batch, seq, 1]. Critics
start from the actor's weights without its LM head (`VALUE_HEAD_PREFIX` is left out of the load) and
a zero head, so the first values are 0 (verl initialises it randomly; zero keeps step 1 reproducible).
"""
import torch

VALUE_HEAD_PREFIX = "output_layer."


class ValueHead(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.sequence_parallel = config.sequence_parallel
        self.weight = torch.nn.Parameter(torch.zeros(1, config.hidden_size, dtype=config.params_dtype))
        # Identical on every TP rank (all see the same gathered hidden states and gradients).
        self.weight.sequence_parallel = False

    def forward(self, hidden_states, weight=None, runtime_gather_output=None):
        if self.sequence_parallel:
            from megatron.core.tensor_parallel import gather_from_sequence_parallel_region

            # The head is replicated, so each rank's input gradient is already whole: the backward
            # takes this rank's slice instead of summing over ranks.
            hidden_states = gather_from_sequence_parallel_region(hidden_states, tensor_parallel_output_grad=False)
        return hidden_states @ self.weight.t(), None


def attach_value_heads(chunks) -> None:
    """Replaces the LM head of the chunk holding the last pipeline stage (before DDP wrapping)."""
    for chunk in chunks:
        if chunk.post_process:
            if chunk.share_embeddings_and_output_weights:
                raise ValueError("a value model needs share_embeddings_and_output_weights=False")
            head = ValueHead(chunk.config)
            if torch.cuda.is_available():
                head.cuda(torch.cuda.current_device())
            chunk.output_layer = head
