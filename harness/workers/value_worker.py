"""A value-model rank: the critic (trained with the clipped value loss) or a reward model (frozen,
scoring each sequence at its last token). Starts from an LM checkpoint without its head (a zero
scalar head) or from its own value checkpoint."""
from functools import partial
from typing import List, Optional

import torch

from harness.workers.rank_worker import DTYPES, Batch, RankWorker, microbatches, value_model_spec
from harness.workers.rl_losses import MiniBatchCounts, value_loss_fn
from harness.workers.token_outputs import token_values


class ValueWorker(RankWorker):
    def build(self, *, model_dir: str, checkpoint: str, dtype: str, optim=None, total_steps: int = 1,
              trainable: bool = True, from_lm: bool = True) -> None:
        """`from_lm`: `checkpoint` is a language model's (its LM head is left out, the value head
        starts at zero); else a value model's own checkpoint, loaded whole."""
        from harness.checkpoint.torch_dist import load_checkpoint
        from harness.models import load_model_spec
        from harness.models.value_head import VALUE_HEAD_PREFIX
        from harness.workers.megatron_engine import MegatronEngine
        from harness.workers.optim_schedule import lr_scheduler, optim_config

        spec = value_model_spec(load_model_spec(model_dir))
        settings = optim_config(optim.lr, optim.min_lr_ratio, optim.weight_decay, optim.betas,
                                optim.clip_grad) if trainable else None
        self.engine = MegatronEngine(spec, self.parallel, settings, params_dtype=DTYPES[dtype], value_head=True,
                                     trainable=trainable)
        load_checkpoint(checkpoint, self.engine.chunks, exclude_prefixes=(VALUE_HEAD_PREFIX,) if from_lm else ())
        self.scheduler = None
        if trainable:
            self.engine.optimizer.reload_model_params()
            self.scheduler = lr_scheduler(self.engine.optimizer, lr=optim.lr, min_lr_ratio=optim.min_lr_ratio,
                                          warmup_ratio=optim.lr_warmup_steps_ratio, style=optim.lr_scheduler,
                                          weight_decay=optim.weight_decay, total_steps=total_steps,
                                          warmup_steps=optim.lr_warmup_steps)

    def _forward(self, batch: Batch, micro_batch_size: int, select_output):
        self.engine.train(False)
        with self.computing():
            results = self.engine.forward_backward(
                microbatches(self.my_slice(batch), micro_batch_size),
                lambda output, batch: (output.sum() * 0.0, {"out": select_output(output, batch)}), forward_only=True)
        if not self.holds_results():
            return None
        return self.tagged(torch.cat([r["out"].float().cpu() for r in results]))

    def compute_values(self, batch: Batch, micro_batch_size: int) -> Optional[tuple]:
        length = batch["response_mask"].shape[1]
        return self._forward(batch, micro_batch_size,
                             lambda output, batch: token_values(output, batch["prompt_lengths"], length))

    def compute_scores(self, batch: Batch, micro_batch_size: int) -> Optional[tuple]:
        """One score per sequence: the head's output at its last token."""
        def last_token(output, batch):
            last = batch["prompt_lengths"] + batch["response_mask"].sum(-1).long() - 1
            return output[..., 0].float().gather(1, last[:, None])[:, 0]

        return self._forward(batch, micro_batch_size, last_token)

    def update(self, batch: Batch, minibatches: List[torch.Tensor], counts: List[MiniBatchCounts],
               micro_batch_size: int, cliprange_value: float, loss_agg_mode: str) -> Optional[tuple]:
        return self.train_minibatches(
            batch, minibatches, counts, micro_batch_size, "critic/vf_loss",
            lambda count: partial(value_loss_fn, cliprange_value=cliprange_value, loss_agg_mode=loss_agg_mode,
                                  counts=count))
