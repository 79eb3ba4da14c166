"""The actor rank: the trained policy, the frozen reference beside it (same layout, same process, as
verl colocates them), log-probs, PPO updates, weight sync to the rollout engine, checkpoints."""
from functools import partial
from typing import List, Optional

import torch

from harness.workers.rank_worker import DTYPES, Batch, RankWorker, microbatches
from harness.workers.rl_losses import MiniBatchCounts, PolicyLossSettings, policy_loss
from harness.workers.token_outputs import token_log_probs


class PolicyWorker(RankWorker):
    def build(self, *, model_dir: str, checkpoint: str, dtype: str, optim, total_steps: int,
              with_reference: bool) -> None:
        from harness.checkpoint.torch_dist import load_checkpoint
        from harness.models import load_model_spec
        from harness.workers.megatron_engine import MegatronEngine
        from harness.workers.optim_schedule import lr_scheduler, optim_config

        self.spec = load_model_spec(model_dir)
        self.engine = MegatronEngine(self.spec, self.parallel, optim_config(
            optim.lr, optim.min_lr_ratio, optim.weight_decay, optim.betas, optim.clip_grad), params_dtype=DTYPES[dtype])
        load_checkpoint(checkpoint, self.engine.chunks)
        self.engine.optimizer.reload_model_params()
        self.scheduler = lr_scheduler(self.engine.optimizer, lr=optim.lr, min_lr_ratio=optim.min_lr_ratio,
                                      warmup_ratio=optim.lr_warmup_steps_ratio, style=optim.lr_scheduler,
                                      weight_decay=optim.weight_decay, total_steps=total_steps,
                                      warmup_steps=optim.lr_warmup_steps)
        self.reference = None
        if with_reference:
            self.reference = MegatronEngine(self.spec, self.parallel, params_dtype=DTYPES[dtype], trainable=False)
            load_checkpoint(checkpoint, self.reference.chunks)

    def compute_log_probs(self, batch: Batch, micro_batch_size: int, reference: bool = False,
                          with_entropy: bool = False) -> Optional[tuple]:
        """{"log_probs"[, "entropy"]} of this rank's slice under the policy (or the reference)."""
        engine = self.reference if reference else self.engine
        response_length = batch["response_mask"].shape[1]

        def outputs(output, batch):
            log_probs, entropy = token_log_probs(output, batch["tokens"], batch["prompt_lengths"], response_length,
                                                 self.spec.vocab_size, with_entropy=with_entropy)
            return output.sum() * 0.0, {"log_probs": log_probs, **({"entropy": entropy} if with_entropy else {})}

        engine.train(False)
        with self.computing():
            results = engine.forward_backward(microbatches(self.my_slice(batch), micro_batch_size), outputs,
                                              forward_only=True)
        if not self.holds_results():
            return None
        return self.tagged({key: torch.cat([r[key].cpu() for r in results]) for key in results[0]})

    def update(self, batch: Batch, minibatches: List[torch.Tensor], counts: List[MiniBatchCounts],
               micro_batch_size: int, settings: PolicyLossSettings) -> Optional[tuple]:
        return self.train_minibatches(
            batch, minibatches, counts, micro_batch_size, "actor/loss",
            lambda count: partial(policy_loss, settings=settings, counts=count, vocab_size=self.spec.vocab_size))

    def sync_weights(self, sink, version) -> None:
        """The model-parallel ranks of data-parallel replica 0 export the policy; the sender feeds `sink`
        (anything with `update_weights(stream, version)`)."""
        from harness.workers.weight_export import export_hf_weights, push_weights

        stream = export_hf_weights(self.engine.chunks, self.spec)
        push_weights(stream, sink, version)
