"""Checks that run on every rank of a 2-rank gloo group (see tests/support/multirank.py).

Each returns plain values; the tests assert on them in the main process.
"""
from harness.config import ParallelConfig
from harness.models import load_model_spec
from harness.parallel import destroy_model_parallel, initialize_model_parallel
from harness.selfcheck import LAYOUTS, OPTIM, TINY_CONFIGS, full_weights, microbatches
from harness.workers.megatron_engine import MegatronEngine


def adam_steps(optimizer):
    """AdamW's step counter of every parameter this rank's optimizer holds."""
    counts = set()
    for inner in getattr(optimizer, "chained_optimizers", [optimizer]):
        for state in inner.optimizer.state.values():
            counts.add(int(state["step"]))
    return sorted(counts)


def resume_across_layouts(arch: str, directory: str, save_layout: str, load_layouts):
    """Uninterrupted: 3 steps at `save_layout`, saving after step 1. Resumed: load that checkpoint
    at each of `load_layouts` and run steps 2 and 3. Returns losses and AdamW step counters."""
    from harness.checkpoint.torch_dist import load_checkpoint, save_checkpoint

    spec = load_model_spec(TINY_CONFIGS[arch])
    full = full_weights(spec, seed=11)
    layouts = {"tp1_dp2": ParallelConfig(), **LAYOUTS}

    def run(parallel, steps, load_from=None, save_after=None):
        initialize_model_parallel(parallel)
        try:
            engine = MegatronEngine(spec, parallel, OPTIM)
            engine.load_full_weights(full)
            extra = load_checkpoint(load_from, engine.chunks, engine.optimizer) if load_from else {}
            losses = {}
            for step in steps:
                losses[step] = engine.train_step(microbatches(spec, step))["loss"]
                if step == save_after:
                    save_checkpoint(directory, engine.chunks, engine.optimizer, extra={"iteration": step + 1})
            return losses, adam_steps(engine.optimizer), extra
        finally:
            destroy_model_parallel()

    uninterrupted, uninterrupted_counts, _ = run(layouts[save_layout], [0, 1, 2], save_after=0)
    report = {"uninterrupted": uninterrupted, "uninterrupted_adam_steps": uninterrupted_counts}
    for name in load_layouts:
        losses, counts, extra = run(layouts[name], [1, 2], load_from=directory)
        report[name] = dict(losses=losses, adam_steps=counts, extra=extra)
    return report


def cpu_layer_behaviour():
    """What megatron-core relies on from the CPU layer, observed inside a live process."""
    import torch
    from megatron.core import tensor_parallel

    from harness.parallel import cpu_compat

    initialize_model_parallel(ParallelConfig(tensor_model_parallel_size=2), seed=5)
    try:
        x = torch.ones(4)
        tracker = tensor_parallel.get_cuda_rng_tracker()

        def tracker_dropout():
            with tracker.fork():
                return torch.nn.functional.dropout(torch.ones(64), p=0.5).tolist()

        first = tracker_dropout()
        outside = torch.nn.functional.dropout(torch.ones(64), p=0.5).tolist()
        tensor_parallel.model_parallel_cuda_manual_seed(5)
        again = tracker_dropout()
        # Recompute-style backward: an autograd Function whose backward allocates on "cuda".
        w = torch.ones(3, requires_grad=True)
        (w * torch.ones(3, device="cuda")).sum().backward()
        return dict(
            installed=cpu_compat.installed(),
            cuda_allocation_device=str(torch.empty(2, device="cuda").device),
            cuda_call_is_noop=x.cuda() is x,
            reported_type=x.type(),
            tracker_differs_from_default=first != outside,
            tracker_reproducible=first == again,
            tp_dropout_mask=first,
            backward_in_mode_ok=w.grad.tolist() == [1.0, 1.0, 1.0],
        )
    finally:
        destroy_model_parallel()


def token_loss_is_split_invariant(arch: str = "qwen2"):
    """One optimizer step's loss and gradients with per-token loss (what SFT trains with) are the
    same whether the examples come as one padded micro-batch or as several of different lengths."""
    import torch

    from harness.data import collate
    from harness.models.sharding import gather_full
    from harness.workers.megatron_engine import reduce_loss, token_sum_lm_loss

    spec = load_model_spec(TINY_CONFIGS[arch])
    full = full_weights(spec, seed=5)
    generator = torch.Generator().manual_seed(3)
    examples = []
    for length in (5, 9, 17, 12, 6, 20):
        ids = torch.randint(0, spec.vocab_size, (length,), generator=generator).tolist()
        examples.append({"input_ids": ids, "loss_mask": [0] * 3 + [1] * (length - 3)})
    splits = {"one": [list(range(6))], "three": [[0, 4], [1, 3], [2, 5]], "six": [[i] for i in range(6)]}
    parallel = LAYOUTS["tp2"]
    results = {}
    for name, groups in splits.items():
        initialize_model_parallel(parallel)
        try:
            engine = MegatronEngine(spec, parallel, OPTIM, calculate_per_token_loss=True)
            engine.load_full_weights(full)
            batches = [collate([examples[i] for i in group], pad_token_id=0) for group in groups]
            outputs = engine.forward_backward(batches, token_sum_lm_loss)
            grads = gather_full(engine.chunks, lambda p: p.main_grad, engine.mapping)
            results[name] = (reduce_loss(outputs), grads)
        finally:
            destroy_model_parallel()
    loss, grads = results["one"]
    return {
        name: dict(
            loss_diff=abs(other_loss - loss),
            grad_diff=max((other_grads[k] - grads[k]).abs().max().item() for k in grads),
        )
        for name, (other_loss, other_grads) in results.items()
        if name != "one"
    }


def signal_one_rank(signalled_rank: int):
    """SIGUSR1 reaches `signalled_rank` only (-1: none); returns what preemption.agreed() says here."""
    import os
    import signal

    import torch.distributed as dist

    from harness.trainer import preemption

    preemption.install()
    if dist.get_rank() == signalled_rank:
        os.kill(os.getpid(), signal.SIGUSR1)
    try:
        return preemption.agreed()
    finally:
        preemption._requested = False  # the group's processes serve the next checks
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
