"""The RL loop (PPO and its relatives: GRPO, DrGRPO, DAPO, RLOO, REINFORCE++, ReMax, ...).

    for each step:
        prompts -> rollout: n samples each, with the rollout's log-probs
        -> reward (rule scorers / custom function / remote / reward model); DAPO: keep informative groups
        -> old log-probs (actor), reference log-probs, values (critic)
        -> KL penalty in the reward (optional) -> advantages -> mismatch correction weights
        -> critic update, actor update (PPO epochs over mini-batches of micro-batches)
        -> weight sync to the rollout engine -> metrics -> validation, checkpoint
"""
from __future__ import annotations

from harness.config.rl import RLConfig
from harness.trainer import ppo_support as support


def run_ppo(config: RLConfig) -> dict:
    run = support.RLRun(config)  # closes what it started if it fails
    try:
        if run.step == 0 and config.trainer.val_before_train and run.val_set is not None:
            run.tracker.log(run.validate(), 0)
        while run.step < run.total_steps:
            step = run.step + 1
            timer = support.PhaseTimer()
            with timer("step"):
                samples, sampling_metrics = run.rollout_and_score(step, timer)  # times "gen" and "reward"
                batch = run.to_batch(samples)
                with timer("old_log_prob"):
                    batch.update(run.log_probs(batch, with_entropy=True))
                if config.uses_reference:
                    with timer("ref"):
                        batch["ref_log_probs"] = run.log_probs(batch, reference=True)["log_probs"]
                if run.cluster.critic is not None:
                    with timer("values"):
                        batch["values"] = run.values(batch)
                with timer("adv"):
                    algorithm_metrics = run.compute_advantages(batch)
                critic_metrics = {}
                if run.cluster.critic is not None:
                    with timer("update_critic"):
                        critic_metrics = run.update_critic(batch, step)
                actor_metrics = {}
                if step > config.trainer.critic_warmup:  # the first critic_warmup steps train the critic only
                    with timer("update_actor"):
                        actor_metrics = run.update_actor(batch, step)
                with timer("update_weights"):
                    run.cluster.sync_weights(step)
            metrics = {**sampling_metrics, **algorithm_metrics, **critic_metrics, **actor_metrics,
                       **timer.metrics(batch), **run.cluster.compute_seconds()}
            run.step = step
            if run.due(config.trainer.test_freq) and run.val_set is not None:
                with timer("testing"):
                    metrics.update(run.validate())
                metrics["timing_s/testing"] = timer.seconds["testing"]
            run.tracker.log(metrics, step)  # before the save: a resumed run never misses a logged step
            run.check_nonfinite(actor_metrics)  # skipped updates are counted; too many in a row stop the run
            if run.due(config.trainer.save_freq):
                run.save()
            run.stop_if_preempted()  # SIGUSR1: this step is saved, then main_ppo exits for a requeue
        return run.finish()
    finally:
        run.close()
