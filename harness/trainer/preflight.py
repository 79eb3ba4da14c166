"""Pre-flight: the checks of a run's input that need no process group, no worker and no model, run
by the entry points before anything starts (and before anything is written).

    preflight.check_sft(config)       # python -m harness.main_sft (every torchrun rank, before its group)
    preflight.check_rl(config)        # python -m harness.main_ppo (before Ray)
    preflight.check_evaluate(args)    # python -m harness.evaluate

Each raises `PreflightError` with one line naming the key or file; the entry point prints it and exits
with 2. Checked here: paths (models hold config.json, weights and a tokenizer; data files are parquet
with their columns and enough rows; the reward function file defines the function; checkpoints are
complete), combinations (TP and PP against the model's heads and layers, the world against TP x PP,
batch sizes against data parallelism, estimators that compare samples against `rollout.n`), and the
resume state (`checkpoints/latest`, `trainer_state.json`). Values out of range are refused before
this, by the config dataclasses; rows of the data are validated by the trainers, before any model.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from harness.checkpoint.layout import MARKER
from harness.trainer.run_state import RunStateError, latest_step, read_state

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
# Estimators whose advantage compares the samples of one prompt: with one sample each it is 0 or undefined.
GROUP_ESTIMATORS = ("grpo", "rloo", "reinforce_plus_plus_baseline", "opo", "gpg", "prime")


class PreflightError(ValueError):
    pass


# ---- paths -------------------------------------------------------------------------------------------
def model_spec(key: str, path: str, need_tokenizer: bool = True):
    """The ModelSpec of the HF model or harness checkpoint at `path` (named `key` in errors)."""
    from harness.models import load_model_spec

    directory = Path(path)
    if not directory.exists():
        raise PreflightError(f"{key}={path}: no such directory")
    if not directory.is_dir():
        raise PreflightError(f"{key}={path}: not a directory (an HF model directory or a harness checkpoint)")
    if not (directory / "config.json").is_file():
        raise PreflightError(f"{key}={path}: no config.json (not an HF model directory or a harness checkpoint)")
    if not (directory / MARKER).is_file() and not any(directory.glob("*.safetensors")):
        raise PreflightError(f"{key}={path}: no weights (*.safetensors), and not a harness checkpoint ({MARKER})")
    if need_tokenizer and not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise PreflightError(f"{key}={path}: no tokenizer ({' or '.join(TOKENIZER_FILES)})")
    try:
        return load_model_spec(str(directory))
    except ValueError as error:
        raise PreflightError(f"{key}: {error}") from None


def data_files(key: str, files, kind: str, columns=None) -> int:
    """Checks each parquet file's existence and columns (from its footer, no rows read); returns the
    rows of all files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from harness.data.formats import RL_REQUIRED_COLUMNS, DataError, as_file_list

    try:
        paths = as_file_list(files)
    except DataError as error:
        raise PreflightError(f"{key}: {error}") from None
    rows = 0
    for path in paths:
        if not os.path.isfile(path):
            raise PreflightError(f"{key}: {path}: {'is a directory' if os.path.isdir(path) else 'no such file'}")
        try:
            parquet = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as error:
            raise PreflightError(f"{key}: {path}: not a readable parquet file ({error})") from None
        names = parquet.schema_arrow.names
        if kind == "rl":
            missing = [name for name in RL_REQUIRED_COLUMNS if name not in names]
            if missing:
                raise PreflightError(f"{key}: {path}: missing column(s) {', '.join(missing)} (verl's RL layout: "
                                     f"{', '.join(RL_REQUIRED_COLUMNS)})")
        elif columns.layout(names) is None:
            raise PreflightError(f"{key}: {path}: no '{columns.messages_key}' column, nor '{columns.prompt_key}' and "
                                 f"'{columns.response_key}' (found: {', '.join(names) or 'none'})")
        rows += parquet.metadata.num_rows
    return rows


def _enough_rows(key: str, rows: int, batch_key: str, batch: int) -> None:
    if rows < batch:
        raise PreflightError(f"{key}: {rows} row(s), fewer than {batch_key}={batch}")


def _layout(key: str, spec, parallel, world: int) -> int:
    """The data-parallel size of `parallel` on `world` ranks, once it fits the model."""
    try:
        spec.validate_parallel(parallel)
        return parallel.data_parallel_size(world)
    except ValueError as error:
        raise PreflightError(f"{key}: {error}") from None


# ---- resume state ------------------------------------------------------------------------------------
def _resume_dir(run_dir: Path, mode: str):
    """The checkpoint step a run resumes from (None: a fresh start)."""
    if mode == "disable":
        return None
    if mode != "auto":
        directory = Path(mode)
        if not directory.is_dir():
            raise PreflightError(f"trainer.resume_mode={mode}: no such checkpoint directory")
        return directory
    step = latest_step(run_dir / "checkpoints")
    if step is None:
        return None
    directory = run_dir / "checkpoints" / f"global_step_{step}"
    if not directory.is_dir():
        raise PreflightError(f"{run_dir / 'checkpoints' / 'latest'}: names step {step}, but {directory} does not "
                             "exist (fix or remove it, or set trainer.resume_mode=disable)")
    return directory


def _complete_checkpoint(directory: Path) -> None:
    marker = directory / MARKER
    try:
        json.loads(marker.read_text())
    except FileNotFoundError:
        raise PreflightError(f"{directory}: not a complete checkpoint ({MARKER} is missing)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PreflightError(f"{marker}: not valid JSON ({error})") from None


# ---- the entry points --------------------------------------------------------------------------------
def world_size_from_environment() -> int:
    """Ranks of this job as torchrun / srun announce them (1 for a plain process)."""
    return int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))


def check_sft(config) -> None:
    from harness.data.formats import SFTColumns

    data = config.data
    spec = model_spec("model.partial_pretrain", config.model.partial_pretrain)
    columns = SFTColumns(data.prompt_key, data.response_key, data.messages_key)
    _enough_rows("data.train_files", data_files("data.train_files", data.train_files, "sft", columns),
                 "data.train_batch_size", data.train_batch_size)
    if data.val_files:
        data_files("data.val_files", data.val_files, "sft", columns)
    world = world_size_from_environment()
    if world % config.megatron.model_parallel_size:
        raise PreflightError(f"megatron: {config.megatron.model_parallel_size} ranks per model replica (tensor x "
                             f"pipeline x context parallel) do not divide the {world} rank(s) of this job "
                             "(torchrun --nproc_per_node / srun set them; a plain process is 1)")
    dp = _layout("megatron", spec, config.megatron, world)
    if data.train_batch_size < dp:
        raise PreflightError(f"data.train_batch_size={data.train_batch_size} is smaller than the {dp} data-parallel "
                             "ranks: every rank needs an example per step")
    try:
        source = _resume_dir(Path(config.trainer.default_local_dir), config.trainer.resume_mode)
    except RunStateError as error:
        raise PreflightError(str(error)) from None
    if source is not None:
        _complete_checkpoint(source)


def check_rl(config) -> None:
    arr, critic, trainer = config.actor_rollout_ref, config.critic, config.trainer
    spec = model_spec("actor_rollout_ref.model.path", arr.model.path)
    critic_spec = (model_spec("critic.model.path", critic.model.path)
                   if critic.enable and critic.model.path != arr.model.path else spec)
    if config.reward_model.enable:
        if not config.reward_model.model.path:
            raise PreflightError("reward_model.model.path is required with reward_model.enable=true")
        reward_spec = model_spec("reward_model.model.path", config.reward_model.model.path, need_tokenizer=False)
        _layout("reward_model.megatron", reward_spec, config.reward_model.megatron, config.world_size)
    data = config.data
    _enough_rows("data.train_files", data_files("data.train_files", data.train_files, "rl"),
                 "data.train_batch_size", data.train_batch_size)
    if data.val_files:
        data_files("data.val_files", data.val_files, "rl")
    _reward_function(config.custom_reward_function)
    _rollout_engine(arr.rollout)
    n = arr.rollout.n
    estimator = config.algorithm.adv_estimator
    if estimator in GROUP_ESTIMATORS and n < 2:
        raise PreflightError(f"algorithm.adv_estimator={estimator} compares the samples of a prompt: "
                             f"actor_rollout_ref.rollout.n={n} must be at least 2")
    dp = _layout("actor_rollout_ref.actor.megatron", spec, arr.actor.megatron, config.world_size)
    _splits("actor_rollout_ref.actor.ppo_mini_batch_size", arr.actor.ppo_mini_batch_size, n, dp)
    _splits("data.train_batch_size", data.train_batch_size, n, dp)
    if critic.enable:
        critic_dp = _layout("critic.megatron", critic_spec, critic.megatron, config.world_size)
        _splits("critic.ppo_mini_batch_size", critic.ppo_mini_batch_size, n, critic_dp)
        _splits("data.train_batch_size", data.train_batch_size, n, critic_dp)
    try:
        source = _resume_dir(Path(trainer.default_local_dir), trainer.resume_mode)
        if source is not None:
            read_state(source)
    except RunStateError as error:
        raise PreflightError(str(error)) from None
    if source is not None:
        for role in ("actor", "critic") if critic.enable else ("actor",):
            _complete_checkpoint(source / role)
    check_algorithm_names(config)


def _splits(key: str, prompts: int, n: int, dp: int) -> None:
    if prompts * n % dp:
        raise PreflightError(f"{key}={prompts} x actor_rollout_ref.rollout.n={n} = {prompts * n} sequences do not "
                             f"split over {dp} data-parallel ranks")


def _reward_function(custom) -> None:
    if custom.path is None:
        return
    from harness.reward.manager import load_custom_scorer

    try:
        load_custom_scorer(custom.path, custom.name)
    except ValueError as error:
        raise PreflightError(str(error)) from None


def _rollout_engine(rollout) -> None:
    launches = rollout.name == "sglang" and not rollout.server_urls and not rollout.router_url
    if launches and not os.path.isfile(rollout.python):
        raise PreflightError(f"actor_rollout_ref.rollout.python={rollout.python}: no such interpreter to launch "
                             "SGLang with (build it with tools/setup_sglang_env.sh, or set rollout.name=embedded)")


def check_algorithm_names(config) -> None:
    """Unknown variant names fail before any worker starts (the error lists the registered ones; the
    registries import torch, so this runs last)."""
    from harness.algorithms import (ADV_ESTIMATORS, AGGREGATION_MODES, KL_CONTROLLERS, KL_ESTIMATORS,
                                    MISMATCH_CORRECTIONS, POLICY_LOSSES)

    algorithm, actor = config.algorithm, config.actor_rollout_ref.actor
    for key, registry, name in (
            ("algorithm.adv_estimator", ADV_ESTIMATORS, algorithm.adv_estimator),
            ("actor_rollout_ref.actor.policy_loss.loss_mode", POLICY_LOSSES, actor.policy_loss.loss_mode),
            ("actor_rollout_ref.actor.loss_agg_mode", AGGREGATION_MODES, actor.loss_agg_mode),
            ("critic.loss_agg_mode", AGGREGATION_MODES, config.critic.loss_agg_mode),
            ("actor_rollout_ref.actor.kl_loss_type", KL_ESTIMATORS, actor.kl_loss_type),
            ("algorithm.kl_penalty", KL_ESTIMATORS, algorithm.kl_penalty),
            ("algorithm.kl_ctrl.type", KL_CONTROLLERS, algorithm.kl_ctrl.type),
            ("algorithm.rollout_is", MISMATCH_CORRECTIONS, algorithm.rollout_is)):
        try:
            registry.get(name)
        except ValueError as error:
            raise PreflightError(str(error) if key in str(error) else f"{key}: {error}") from None
    if algorithm.adv_estimator == "prime":
        raise PreflightError("algorithm.adv_estimator=prime needs implicit process rewards from a PRM, which "
                             "main_ppo does not run yet (harness.algorithms has the estimator)")
    if algorithm.adv_estimator in ("gae",) and not config.critic.enable:
        raise PreflightError(f"algorithm.adv_estimator={algorithm.adv_estimator} needs values: critic.enable must "
                             "not be false")


def check_evaluate(args) -> None:
    """`python -m harness.evaluate` arguments."""
    for flag, path in (("--checkpoint-path", args.checkpoint_path), ("--compare-with", args.compare_with)):
        if path is not None:
            model_spec(flag, path)
    data_files("--data", args.data, "rl")
    for flag, value, low in (("--max-new-tokens", args.max_new_tokens, 1), ("--limit", args.limit, 1),
                             ("--samples", args.samples, 0), ("--temperature", args.temperature, 0)):
        if value is not None and value < low:
            raise PreflightError(f"{flag}={value}: must be at least {low}")
    if not 0 <= args.min_accuracy <= args.max_accuracy <= 1:
        raise PreflightError(f"--min-accuracy={args.min_accuracy} / --max-accuracy={args.max_accuracy}: need "
                             "0 <= min <= max <= 1")


def refused(check, subject) -> bool:
    """Runs `check(subject)`; on failure reports the one line (`refuse`: rank 0, torchrun's error file)."""
    from harness.config.refusal import refuse

    try:
        check(subject)
    except PreflightError as error:
        refuse(f"error: {error}")
        return True
    return False
