"""`python -m harness.main_ppo` end to end on Ray (2 CPU ranks, embedded engine): the first on-policy
step is exact, TP=2 / PP=2 give TP=1's first step, a SIGKILLed run resumes to the uninterrupted
run's metrics, PPO's critic learns, and bad input (failing rewards, NaN losses, long prompts) is
handled as configured."""
import os
import signal
import subprocess
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.trainer.ppo_runs import ENV, ROOT, make_assets, metrics, ppo_command, run



@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("ppo_assets"))


@pytest.fixture(scope="module")
def reference_run(assets, tmp_path_factory):
    """TP=1, 2 data-parallel ranks, a reference model (KL loss), 4 steps, checkpoints at 2 and 4."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    run(ppo_command(assets, run_dir, "actor_rollout_ref.actor.use_kl_loss=true"))
    return run_dir


def test_first_step_is_on_policy_and_the_run_completes(reference_run):
    steps, validations = metrics(reference_run)
    first = steps[1]
    # Same weights, same micro-batches: the ratio is exactly 1 at the first step.
    assert first["actor/ppo_kl"] == 0.0 and first["actor/pg_clipfrac"] == 0.0
    assert first["actor/kl_loss"] == 0.0 and first["actor/ref_kl"] == 0.0  # the actor is still the reference
    # The embedded engine runs the same fp32 weights: rollout and trainer log-probs agree.
    assert first["mismatch/abs_log_prob_diff_max"] < 1e-4
    assert first["critic/advantages/max"] > 0 > first["critic/advantages/min"], "a degenerate test: no signal"
    assert first["actor/grad_norm"] > 0
    for step, record in steps.items():
        assert record["batch/samples"] == 32 and record["batch/prompts"] == 8
        for key in ("timing_s/gen", "timing_s/reward", "timing_s/old_log_prob", "timing_s/ref", "timing_s/update_actor",
                    "timing_s/update_weights", "perf/throughput", "critic/score/mean", "response_length/mean",
                    "group/reward_std/mean", "actor/entropy", "actor/lr"):
            assert key in record, f"step {step} lacks {key}"
    assert sorted(steps) == [1, 2, 3, 4]
    assert steps[3]["actor/kl_loss"] > 0  # the policy moved away from the reference
    assert [v["step"] for v in validations] == [0, 2, 4]
    checkpoints = reference_run / "checkpoints"
    assert (checkpoints / "latest").read_text() == "4"
    assert (checkpoints / "global_step_2" / "actor" / "harness_checkpoint.json").exists()


def test_final_actor_is_exported_to_hf(reference_run):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(reference_run / "hf_actor")
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("layout", [
    ["actor_rollout_ref.actor.megatron.tensor_model_parallel_size=2"],
    # ... and the rollout engine on its own resources (split placement) changes nothing either.
    ["actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=2", "trainer.placement=split"],
], ids=["tp2", "pp2_split"])
def test_parallel_layouts_match_tp1_first_step(assets, reference_run, tmp_path, layout):
    run_dir = tmp_path / "run"
    run(ppo_command(assets, run_dir, "actor_rollout_ref.actor.use_kl_loss=true", "trainer.total_training_steps=1",
                    "trainer.val_before_train=false", *layout))
    got, expected = metrics(run_dir)[0][1], metrics(reference_run)[0][1]
    assert got["critic/score/mean"] == expected["critic/score/mean"]  # the same samples
    assert got["actor/ppo_kl"] == 0.0
    for key in ("actor/pg_loss", "actor/entropy", "actor/grad_norm", "actor/entropy_rollout_batch"):
        assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), key


def test_resume_after_sigkill_matches_uninterrupted_run(assets, reference_run, tmp_path):
    killed = tmp_path / "killed"
    command = ppo_command(assets, killed, "actor_rollout_ref.actor.use_kl_loss=true")
    process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    latest = killed / "checkpoints" / "latest"
    try:
        deadline = time.monotonic() + 400
        while not latest.exists():  # kill as soon as the first checkpoint is complete
            assert process.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 400 s"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the driver, its Ray cluster and workers: the run's own group
        process.wait(timeout=60)
    assert latest.read_text() == "2"
    run(command)
    resumed, whole = metrics(killed)[0], metrics(reference_run)[0]
    assert sorted(resumed) == [1, 2, 3, 4]  # steps logged before the kill are not repeated
    for step in (3, 4):
        for key in ("critic/score/mean", "actor/pg_loss", "actor/grad_norm", "actor/kl_loss", "actor/entropy"):
            assert resumed[step][key] == pytest.approx(whole[step][key], rel=1e-5, abs=1e-7), (step, key)


def test_ppo_with_a_critic_learns_values_and_serves_as_a_reward_model(assets, tmp_path):
    run_dir = tmp_path / "run"
    run(ppo_command(assets, run_dir, "algorithm.adv_estimator=gae", "algorithm.lam=0.95", "critic.optim.lr=3e-3",
                    "trainer.total_training_steps=6", "trainer.test_freq=-1", "trainer.save_freq=-1",
                    "trainer.val_before_train=false"))
    steps = metrics(run_dir)[0]
    assert steps[1]["actor/ppo_kl"] == 0.0
    assert "timing_s/values" in steps[1] and "timing_s/update_critic" in steps[1]
    losses = [steps[s]["critic/vf_loss"] for s in sorted(steps)]
    assert min(losses[-2:]) < 0.5 * losses[0], losses

    # The trained value model (it predicts this reward) scores the next run's samples at their last token.
    critic = run_dir / "checkpoints" / "global_step_6" / "critic"
    scored = tmp_path / "scored"
    run(ppo_command(assets, scored, "reward_model.enable=true", f"reward_model.model.path={critic}",
                    "trainer.total_training_steps=1", "trainer.test_freq=-1", "trainer.val_before_train=false"))
    first = metrics(scored)[0][1]
    assert "timing_s/compute_reward_model" in first
    assert first["critic/score/max"] > first["critic/score/min"]  # model scores, not a constant


def test_failing_and_hanging_rewards_are_bounded_and_counted(assets, tmp_path):
    """A reward function that raises on some answers and hangs once: those samples score as failed,
    the hang costs reward_model.timeout_s, and the run completes. A prompt over max_prompt_length is
    filtered and counted."""
    data = pq.read_table(assets / "data" / "rl_train.parquet").to_pylist()
    data[0]["prompt"] = [{"role": "user", "content": "How many a in " + "a" * 200 + "?"}]
    train_file = tmp_path / "train_with_long_prompt.parquet"
    pq.write_table(pa.Table.from_pylist(data), train_file)
    run_dir = tmp_path / "run"
    env = {**ENV, "HARNESS_TEST_HANG_MARKER": str(tmp_path / "hung_once")}
    result = run(ppo_command(assets, run_dir, "custom_reward_function.name=flaky_score", "reward_model.timeout_s=2",
                             "trainer.total_training_steps=2", "trainer.test_freq=-1", "trainer.save_freq=-1",
                             "trainer.val_before_train=false", "algorithm.filter_groups.enable=true",
                             "reward_model.overlong_buffer.enable=true", "reward_model.overlong_buffer.len=4",
                             train_file=train_file), env=env)
    steps = metrics(run_dir)[0]
    # DAPO's dynamic sampling and overlong penalty: full batches, the generation rounds bounded.
    assert all(s["batch/samples"] == 32 and 1 <= s["dynamic_sampling/rounds"] <= 4 for s in steps.values())
    assert min(s["critic/score/min"] for s in steps.values()) < 0  # responses at the length limit are penalised
    assert sum(s["reward/timed_out"] for s in steps.values()) == 1
    assert sum(s["reward/failed"] for s in steps.values()) >= 2  # the hang plus answers of length 3k
    assert all(s["data/filtered_overlong_prompts"] == 1 for s in steps.values())
    assert "1 over max_prompt_length" in result.stderr + result.stdout


def test_long_prompt_is_an_error_when_not_filtered(assets, tmp_path):
    data = pq.read_table(assets / "data" / "rl_train.parquet").to_pylist()
    data[3]["prompt"] = [{"role": "user", "content": "x" * 300}]
    train_file = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist(data), train_file)
    started = time.monotonic()
    result = run(ppo_command(assets, tmp_path / "run", "data.filter_overlong_prompts=false", train_file=train_file),
                 check=False)
    assert result.returncode == 2
    assert str(train_file) in result.stderr and "row 3" in result.stderr and "max_prompt_length" in result.stderr
    assert time.monotonic() - started < 60  # refused before any worker starts


def test_remax_generates_greedy_baselines(assets, tmp_path):
    run_dir = tmp_path / "run"
    run(ppo_command(assets, run_dir, "algorithm.adv_estimator=remax", "trainer.total_training_steps=1",
                    "trainer.test_freq=-1", "trainer.val_before_train=false"))
    first = metrics(run_dir)[0][1]
    assert first["actor/ppo_kl"] == 0.0 and first["batch/samples"] == 32


def test_nan_loss_skips_steps_then_stops_with_a_clear_message(assets, tmp_path):
    run_dir = tmp_path / "run"
    result = run(ppo_command(assets, run_dir, "algorithm.adv_estimator=tests.trainer.ppo_hooks:nan_advantages",
                             "trainer.max_nan_steps=2", "trainer.val_before_train=false", "trainer.test_freq=-1"),
                 check=False)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "non-finite actor loss in 2 consecutive steps" in result.stderr
    steps = metrics(run_dir)[0]
    assert [steps[s]["actor/skipped_nonfinite"] for s in sorted(steps)] == [1, 1]
