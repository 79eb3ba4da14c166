"""Tiny runs shared by the launcher tests."""


def tiny_grpo_overrides(assets, run_dir):
    """One GRPO step of the tiny model: 4 prompts x 4 samples, no validation, console only."""
    return [f"data.train_files={assets / 'data' / 'rl_train.parquet'}",
            f"data.val_files={assets / 'data' / 'rl_val.parquet'}", f"actor_rollout_ref.model.path={assets / 'model'}",
            f"trainer.default_local_dir={run_dir}", "data.train_batch_size=4",
            "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
            "actor_rollout_ref.rollout.n=4", "trainer.total_training_steps=1", "trainer.val_before_train=false",
            "trainer.test_freq=-1", "trainer.save_freq=-1", "trainer.logger=[console]", "trainer.export_hf=false"]
