"""A Megatron model in training: DDP-wrapped chunks, the distributed optimizer, and one step.

Trainers and workers call `forward_backward` and `optimizer_step` (or `train_step` for both); the
pipeline schedule, micro-batching and gradient reduction are megatron-core's.
"""
from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, Iterable, List, Optional

import torch

from harness.config.parallel import ParallelConfig
from harness.models.builder import build_model
from harness.models.hf_config import ModelSpec
from harness.models.mapping import model_mapping
from harness.models.sharding import load_full_weights
from harness.models.value_head import attach_value_heads


@dataclass
class OptimConfig:
    lr: float = 1e-5
    min_lr: float = 0.0
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad: float = 1.0


# A loss function gets the model output for one micro-batch and that micro-batch, and returns
# (scalar loss, dict of detached metrics). Megatron divides the loss by the number of micro-batches.
LossFunc = Callable[[torch.Tensor, Dict[str, torch.Tensor]], tuple]


def token_mean_lm_loss(per_token_loss: torch.Tensor, batch: Dict[str, torch.Tensor]):
    """Next-token cross entropy averaged over the tokens where `loss_mask` is 1, per micro-batch."""
    mask = batch["loss_mask"].to(per_token_loss.dtype)
    loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1)
    return loss, {"loss": loss.detach()}


def token_sum_lm_loss(per_token_loss: torch.Tensor, batch: Dict[str, torch.Tensor]):
    """Summed next-token cross entropy and its token count: with `calculate_per_token_loss=True`
    megatron-core divides by the step's token count over all micro-batches and data-parallel ranks,
    so every token weighs the same however the batch was split (gradient accumulation is exact)."""
    mask = batch["loss_mask"].to(per_token_loss.dtype)
    loss_sum = (per_token_loss.float() * mask).sum()
    tokens = mask.sum().to(torch.int)
    return loss_sum, tokens, {"loss_sum": loss_sum.detach(), "tokens": tokens.detach()}


class MegatronEngine:
    def __init__(
        self,
        spec: ModelSpec,
        parallel: ParallelConfig,
        optim: Optional[OptimConfig] = None,
        params_dtype: torch.dtype = torch.float32,
        value_head: bool = False,
        trainable: bool = True,
        **config_overrides,
    ):
        """`value_head`: a scalar head replaces the LM head (critic, reward model; the model must not
        tie embeddings). `trainable=False`: a frozen model (reference, reward model) without gradient
        buffers or optimizer, for forward passes only."""
        from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
        from megatron.core.transformer.module import Float16Module

        self.spec, self.parallel = spec, parallel
        self.mapping = model_mapping(spec)
        self.optim_config = optim or OptimConfig()
        chunks = build_model(spec, parallel, params_dtype=params_dtype, **config_overrides)
        self.config = chunks[0].config
        if value_head:
            attach_value_heads(chunks)
        if params_dtype != torch.float32:
            chunks = [Float16Module(self.config, chunk) for chunk in chunks]
        self.optimizer = None
        if not trainable:
            for chunk in chunks:
                chunk.requires_grad_(False)
                chunk.eval()
            self.chunks = chunks
            return
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            overlap_grad_reduce=False,
            use_distributed_optimizer=parallel.use_distributed_optimizer,
        )
        self.chunks: List = [
            DistributedDataParallel(
                config=self.config, ddp_config=ddp_config, module=chunk, disable_bucketing=index > 0
            )
            for index, chunk in enumerate(chunks)
        ]
        self.config.finalize_model_grads_func = finalize_model_grads
        o = self.optim_config
        self.optimizer = get_megatron_optimizer(
            OptimizerConfig(
                optimizer="adam",
                lr=o.lr,
                min_lr=o.min_lr,
                weight_decay=o.weight_decay,
                adam_beta1=o.adam_beta1,
                adam_beta2=o.adam_beta2,
                adam_eps=o.adam_eps,
                clip_grad=o.clip_grad,
                use_distributed_optimizer=parallel.use_distributed_optimizer,
                params_dtype=params_dtype,
                bf16=params_dtype == torch.bfloat16,
                fp16=params_dtype == torch.float16,
            ),
            self.chunks,
        )

    def load_full_weights(self, full: Dict[str, torch.Tensor]) -> None:
        """Load full (unsharded, global-named) Megatron tensors; the optimizer's main copies follow."""
        load_full_weights(self.chunks, full, self.mapping)
        if self.optimizer is not None:
            self.optimizer.reload_model_params()

    def forward_backward(
        self,
        microbatches: List[Dict[str, torch.Tensor]],
        loss_func: LossFunc = token_mean_lm_loss,
        forward_only: bool = False,
        finalize_grads: bool = True,
    ) -> List[dict]:
        """Runs the pipeline schedule over `microbatches` (each: tokens, position_ids, labels, loss_mask;
        all of one shape). Returns the loss functions' metric dicts (on the last pipeline stage; empty
        elsewhere). With `finalize_grads=False` the caller reduces gradients (`finalize_grads()`)."""
        from megatron.core.pipeline_parallel import get_forward_backward_func

        if not forward_only:
            for chunk in self.chunks:
                chunk.zero_grad_buffer()
            # The plain (non-distributed) optimizer aliases param.grad to main_grad; a stale alias
            # would make backward accumulate into the fresh buffer twice.
            if self.optimizer is not None:
                self.optimizer.zero_grad()
        micro_batch_size, seq_length = microbatches[0]["tokens"].shape
        iterators = [iter(microbatches) for _ in self.chunks]
        finalize = self.config.finalize_model_grads_func
        if not finalize_grads:
            self.config.finalize_model_grads_func = None
        try:
            with torch.set_grad_enabled(not forward_only):  # a forward-only pass keeps no graph
                return get_forward_backward_func()(
                    forward_step_func=partial(_forward_step, loss_func=loss_func),
                    data_iterator=iterators if len(iterators) > 1 else iterators[0],
                    model=self.chunks if len(self.chunks) > 1 else self.chunks[0],
                    num_microbatches=len(microbatches),
                    seq_length=seq_length,
                    micro_batch_size=micro_batch_size,
                    forward_only=forward_only,
                )
        finally:
            self.config.finalize_model_grads_func = finalize

    def finalize_grads(self) -> None:
        self.config.finalize_model_grads_func(self.chunks)

    def optimizer_step(self) -> dict:
        ok, grad_norm, _ = self.optimizer.step()
        return {"update_successful": bool(ok), "grad_norm": float(grad_norm) if grad_norm is not None else float("nan")}

    def train_step(self, microbatches, loss_func: LossFunc = token_mean_lm_loss) -> dict:
        """One optimizer step over `microbatches`; every rank returns the same loss."""
        outputs = self.forward_backward(microbatches, loss_func)
        step = self.optimizer_step()
        return {"loss": reduce_loss(outputs), **step}

    def train(self, mode: bool = True):
        for chunk in self.chunks:
            chunk.train(mode)


def _forward_step(data_iterator, model, loss_func):
    from harness.parallel import device

    batch = {key: value.to(device(), non_blocking=True) for key, value in next(data_iterator).items()}
    output = model(batch["tokens"], batch["position_ids"], None, labels=batch.get("labels"))
    return output, partial(loss_func, batch=batch)


def mean_metric(outputs: Iterable[dict], key: str) -> Optional[float]:
    values = [float(o[key]) for o in outputs]
    return sum(values) / len(values) if values else None


def reduce_loss(outputs: List[dict]) -> float:
    """The step's loss over all micro-batches and data-parallel ranks, on every rank: token-weighted
    when the loss function reports `loss_sum` / `tokens`, else the mean of per-micro-batch losses."""
    from megatron.core import parallel_state

    from harness.parallel import device

    value = None
    if outputs:
        if "tokens" in outputs[0]:
            totals = torch.tensor(
                [sum(float(o["loss_sum"]) for o in outputs), sum(float(o["tokens"]) for o in outputs)],
                dtype=torch.float64, device=device(),
            )
            torch.distributed.all_reduce(totals, group=parallel_state.get_data_parallel_group())
            value = (totals[0] / totals[1].clamp(min=1)).item()
        else:
            mean = torch.tensor([mean_metric(outputs, "loss")], dtype=torch.float64, device=device())
            torch.distributed.all_reduce(mean, group=parallel_state.get_data_parallel_group())
            value = mean.item() / parallel_state.get_data_parallel_world_size()
    return broadcast_from_last_stage(value)


def broadcast_from_last_stage(value: Optional[float]) -> float:
    """Pipeline stages other than the last have no loss; give them the last stage's."""
    from megatron.core import parallel_state

    if parallel_state.get_pipeline_model_parallel_world_size() == 1:
        return value
    from harness.parallel import device

    tensor = torch.tensor([value if value is not None else 0.0], dtype=torch.float64, device=device())
    torch.distributed.broadcast(
        tensor,
        src=parallel_state.get_pipeline_model_parallel_last_rank(),
        group=parallel_state.get_pipeline_model_parallel_group(),
    )
    return tensor.item()
