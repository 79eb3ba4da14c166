"""Supervised fine-tuning with Megatron: the loop.

    load data (validated) -> build the model at the configured TP/PP -> load weights (an HF model is
    converted on the fly) or resume -> for each step: micro-batches by token budget -> forward/backward
    -> optimizer + LR schedule -> metrics; validation loss every test_freq, checkpoint every save_freq
    -> export the best checkpoint (lowest validation loss) to HF. SIGUSR1 (preemption): checkpoint
    after the current step on every rank and stop (main_sft exits 75).
"""
import math
import time

import torch

from harness.config.sft import SFTConfig
from harness.trainer import preemption
from harness.trainer import sft_support as support
from harness.trainer.checkpoints import CheckpointDirectory


def run_sft(config: SFTConfig) -> dict:
    from harness.parallel import init_distributed, initialize_model_parallel
    from harness.workers.megatron_engine import MegatronEngine, token_sum_lm_loss

    model_dir = config.model.partial_pretrain
    spec, tokenizer = support.load_model_spec_and_tokenizer(model_dir)
    spec.validate_parallel(config.megatron)
    # Bad data stops the run here, before any process group or model exists.
    train_set = support.load_examples(config.data, config.data.train_files, tokenizer)
    val_set = support.load_examples(config.data, config.data.val_files, tokenizer) if config.data.val_files else None

    init_distributed()
    rank0 = torch.distributed.get_rank() == 0
    initialize_model_parallel(config.megatron, seed=config.trainer.seed)
    plan = support.StepPlan(
        len(train_set), config.data.train_batch_size, config.trainer, config.trainer.seed, config.data.shuffle
    )
    engine = MegatronEngine(
        spec,
        config.megatron,
        support.optim_config(config.optim),
        params_dtype=support.DTYPES[config.model.dtype],
        calculate_per_token_loss=True,
        **support.variable_shape_options(config.megatron),
    )
    scheduler = support.lr_scheduler(engine.optimizer, config.optim, plan.total_steps)
    checkpoints = CheckpointDirectory(config.trainer.default_local_dir, model_dir)
    state = checkpoints.resume_or_initialise(engine, scheduler, config.trainer.resume_mode)
    tracker = support.tracker(config, plan.total_steps, state["step"]) if rank0 else None

    for step in range(state["step"], plan.total_steps):
        started = time.perf_counter()
        indices = plan.indices(step)
        microbatches = support.microbatches(train_set, indices, config.data, config.megatron, tokenizer.pad_token_id)
        result = engine.train_step(microbatches, token_sum_lm_loss)
        scheduler.step(increment=1)
        metrics = {
            "train/loss": result["loss"],
            "train/grad_norm": result["grad_norm"],
            "train/lr": engine.optimizer.param_groups[0]["lr"],
            "train/tokens_per_s": support.step_tokens(train_set, indices) / (time.perf_counter() - started),
            "train/epoch": plan.epoch(step),
        }
        done = step + 1
        last = done == plan.total_steps
        improved = False
        if val_set is not None and (last or _due(done, config.trainer.test_freq)):
            metrics["val/loss"] = support.validation_loss(engine, val_set, config.data, config.megatron, tokenizer.pad_token_id)
            improved = _improves(state["best"], metrics["val/loss"])
            if improved:
                state["best"] = {"step": done, "val_loss": metrics["val/loss"]}
        if tracker is not None:  # before the save: a resume then never misses a logged step
            tracker.log(metrics, done)
        stop = not last and preemption.agreed()  # SIGUSR1 on any rank: every rank stops here
        # A new best is always saved, so the best model is a checkpoint that exists.
        if last or improved or stop or _due(done, config.trainer.save_freq):
            checkpoints.save(engine, scheduler, done, state["best"])
        if stop:
            if tracker is not None:
                tracker.close()
            raise preemption.Preempted(done, checkpoints.step_dir(done))
    if tracker is not None:
        tracker.close()
    exported = checkpoints.export_best(state["best"], plan.total_steps) if config.trainer.export_hf else None
    torch.distributed.barrier()
    return {"steps": plan.total_steps, "best": state["best"], "hf_export": exported}


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _improves(best, val_loss: float) -> bool:
    return math.isfinite(val_loss) and (best is None or val_loss < best["val_loss"])
