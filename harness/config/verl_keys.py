"""verl's command-line keys, translated: one table per entry point (`main_sft`, `main_ppo`).

A verl recipe runs here with its module name swapped. Each of its keys is either one of ours (most
are: verl's names are our interface), or a row below:
- `Rename(to, convert)`: the same setting under our name (`model.path` -> `model.partial_pretrain`,
  `enable_gradient_checkpointing=True` -> Megatron's full activation recompute), `convert` mapping
  the value where the two spell it differently;
- `Ignored(reason)`: no effect here (FSDP settings, HDFS directories, vLLM scheduler knobs); the run
  prints one line per such key with the reason, never silently;
- `Ignored(reason, only=..., refusal=...)`: accepted (and announced) at the values in `only`, the
  ones that switch a feature off; any other value is refused with `refusal` (LoRA, expert parallel,
  PRIME's implicit reward model), since ignoring it would train something else than asked.
A key that is neither ours nor in the table is a typo: it fails naming the closest key.

`*` in a key matches any run of characters; a `Rename` whose key ends in `.*` carries the tail over
to its `to` (`...engine_kwargs.sglang.*` -> `...rollout.sglang.*`). Where we differ from verl on
purpose (defaults, semantics) is listed in docs/verl.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

SKIP = object()  # a `convert` result: nothing to set (the value is our default behaviour)


@dataclass(frozen=True)
class Rename:
    to: str
    convert: Optional[Callable[[Any], Any]] = None


@dataclass(frozen=True)
class Ignored:
    reason: str
    only: Optional[tuple] = None  # accepted values; None: any value
    refusal: str = ""


Rule = Rename | Ignored

# ---- value conversions -----------------------------------------------------------------------------


def as_list(value):
    """`trainer.logger=console`: verl (Hydra) accepts a bare string for a list."""
    return [value] if isinstance(value, str) else value


def recompute(enabled):
    """verl's gradient checkpointing is Megatron's full activation recompute (uniform, 1 layer per group)."""
    return "full" if enabled else None


def dtype(value):
    names = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
    return names.get(value, value)


def when_true(value):
    return True if value else SKIP


def filter_metric(value):
    """DAPO's group filter: verl's `acc` / `seq_reward` are the sample's score here, `seq_final_reward`
    its reward after the KL penalty."""
    return {"acc": "score", "seq_reward": "score", "seq_final_reward": "reward"}.get(value, value)


def correction_name(value):
    return "none" if value is None else value


# ---- reasons shared by several keys ----------------------------------------------------------------
GROUP = "a Hydra config-group choice: one Megatron engine (and its one config) trains here"
FSDP = "an FSDP engine setting; Megatron trains here (layouts: the *.megatron.* keys)"
OFFLOAD = ("host offload is not implemented: parameters, gradients and optimizer state stay on the training "
           "device")
REMOVE_PADDING = ("sequences are right-padded (RL: per batch, to a multiple of 8; SFT: per micro-batch) and padding "
                  "never enters the loss; packed (THD) sequences are not implemented, the numbers are the same")
ULYSSES = ("Ulysses sequence parallelism is FSDP's; Megatron splits sequences with *.megatron.sequence_parallel "
           "(and context_parallel_size)")
MBRIDGE = "HF <-> Megatron weights go through harness/models/mappings (no mbridge)"
DIST_CKPT = "checkpoints are always megatron-core dist_checkpointing (torch_dist), resharded on load"
REMOTE_CODE = "models are built from config.json (Qwen2, Qwen3, Llama); no remote code runs"
KERNELS = "kernel choice: Transformer Engine's when importable, else megatron-core's local implementation"
CKPT_CONTENTS = "checkpoints always hold the model, the optimizer, the LR schedule and the trainer state"
CKPT_KEEP = "every checkpoint is kept (prune old global_step_* directories yourself)"
HDFS = "no HDFS copy: checkpoints stay in trainer.default_local_dir"
VLLM_ONLY = "a vLLM scheduler setting; verl does not pass it to SGLang either"
OLD_LOG_PROBS = ("old log-probs use the actor's update micro-batches (actor.ppo_micro_batch_size_per_gpu or its "
                 "token budget), so the first PPO ratio is exactly 1")
LORA_OFF = "LoRA is off: full fine-tuning"
LORA = "LoRA adapters are not supported (full fine-tuning only): drop the key or set it to 0"
EP = "expert parallelism is not supported (dense models only): drop the key or set it to 1"
PRIME = ("PRIME's implicit process reward model is not run by main_ppo (harness.algorithms has the estimator): "
         "drop the key or set it to none")
TORCH_COMPILE = "torch.compile is not used"


def _megatron(prefix: str, target: Optional[str]) -> Dict[str, Rule]:
    """verl's `<prefix>.*` Megatron engine keys (`target`: our ParallelConfig block; None: forward-only,
    nothing to recompute)."""
    rules: Dict[str, Rule] = {
        f"{prefix}.param_offload": Ignored(OFFLOAD), f"{prefix}.grad_offload": Ignored(OFFLOAD),
        f"{prefix}.optimizer_offload": Ignored(OFFLOAD),
        f"{prefix}.use_dist_checkpointing": Ignored(DIST_CKPT), f"{prefix}.dist_checkpointing_path": Ignored(DIST_CKPT),
        f"{prefix}.use_mbridge": Ignored(MBRIDGE), f"{prefix}.vanilla_mbridge": Ignored(MBRIDGE),
        f"{prefix}.use_remove_padding": Ignored(REMOVE_PADDING),
        f"{prefix}.expert_model_parallel_size": Ignored("dense model: no experts", only=(1,), refusal=EP),
        f"{prefix}.expert_tensor_parallel_size": Ignored("dense model: no experts", only=(None, 1), refusal=EP),
        f"{prefix}.override_transformer_config.attention_backend": Ignored(KERNELS),
        f"{prefix}.override_transformer_config.gradient_accumulation_fusion": Ignored(KERNELS),
        f"{prefix}.use_megatron_fsdp": Ignored("parameters are not sharded with Megatron-FSDP; the distributed "
                                               "optimizer shards optimizer state (the numbers are the same)"),
    }
    for key in ("recompute_granularity", "recompute_method", "recompute_num_layers"):
        source = f"{prefix}.override_transformer_config.{key}"
        rules[source] = (Rename(f"{target}.{key}") if target else
                         Ignored("the reference model only runs forward passes: nothing to recompute"))
    return rules


# ---- main_sft: verl's sft_trainer (engine-based) and its older fsdp_sft_trainer -----------------------
SFT_KEYS: Dict[str, Rule] = {
    "engine": Ignored(GROUP), "optim": Ignored(GROUP), "model": Ignored(GROUP), "hydra.*": Ignored("Hydra's own settings"),
    "profiler.*": Ignored("profiling hooks are not wired"),
    # data
    "data.pad_mode": Ignored(REMOVE_PADDING),
    "data.num_workers": Ignored("examples are tokenized once at start (no dataloader workers)"),
    "data.ignore_input_ids_mismatch": Ignored("each chat is rendered whole by the chat template, so there is no "
                                              "per-turn concatenation to mismatch"),
    "data.balance_dp_token": Ignored("token balancing over data-parallel ranks is not implemented (the loss is "
                                     "per token over the whole step either way)"),
    "data.use_shm": Ignored("no shared-memory copy of the data"),
    "data.multiturn.enable": Ignored("the layout is read from the file: a messages column is a chat"),
    "data.multiturn.messages_key": Rename("data.messages_key"),
    "data.multiturn.tools_key": Ignored("a tools column is not rendered into the chat template"),
    "data.tools_key": Ignored("a tools column is not rendered into the chat template"),
    "data.prompt_dict_keys": Ignored("not used", only=(None,), refusal="dict-valued prompt columns are not "
                                     "supported: write prompt/response or messages columns"),
    "data.response_dict_keys": Ignored("not used", only=(None,), refusal="dict-valued response columns are not "
                                       "supported: write prompt/response or messages columns"),
    "data.chat_template": Ignored("the tokenizer's chat template is used", only=(None,),
                                  refusal="a custom chat template is not supported: put it in the tokenizer"),
    # model
    "model.path": Rename("model.partial_pretrain"),
    "model.use_remove_padding": Ignored(REMOVE_PADDING), "use_remove_padding": Ignored(REMOVE_PADDING),
    "model.enable_gradient_checkpointing": Rename("megatron.recompute_granularity", recompute),
    "model.trust_remote_code": Ignored(REMOTE_CODE),
    "model.external_lib": Ignored("not used", only=(None,), refusal=REMOTE_CODE),
    "model.strategy": Ignored(FSDP), "model.fsdp_config.*": Ignored(FSDP),
    "model.lora_rank": Ignored(LORA_OFF, only=(0,), refusal=LORA),
    "model.lora_alpha": Ignored("used only with model.lora_rank > 0"),
    "model.target_modules": Ignored("used only with model.lora_rank > 0"),
    "model.use_liger": Ignored(KERNELS), "model.use_fused_kernels": Ignored(KERNELS),
    "ulysses_sequence_parallel_size": Ignored(ULYSSES), "engine.ulysses_sequence_parallel_size": Ignored(ULYSSES),
    "engine.strategy": Ignored(FSDP), "engine.fsdp_size": Ignored(FSDP), "engine.model_dtype": Ignored(FSDP),
    "engine.wrap_policy.*": Ignored(FSDP), "engine.reshard_after_forward": Ignored(FSDP),
    "engine.use_torch_compile": Ignored(TORCH_COMPILE),
    # the Megatron engine block is our `megatron` block
    **{f"engine.{key}": Rename(f"megatron.{key}") for key in (
        "tensor_model_parallel_size", "pipeline_model_parallel_size", "virtual_pipeline_model_parallel_size",
        "context_parallel_size", "sequence_parallel", "use_distributed_optimizer")},
    **_megatron("engine", "megatron"),
    "engine.dtype": Rename("model.dtype", dtype),
    # optimizer: verl's FSDP and Megatron optimizer names
    "optim.lr_warmup_steps_ratio": Rename("optim.warmup_steps_ratio"),
    "optim.warmup_style": Rename("optim.lr_scheduler"), "optim.lr_scheduler_type": Rename("optim.lr_scheduler"),
    "optim.lr_decay_style": Rename("optim.lr_scheduler"),
    "optim.lr_warmup_init": Ignored("warmup starts from 0", only=(0,),
                                    refusal="warmup starts from a learning rate of 0 here: drop the key"),
    "optim.optimizer": Ignored("megatron-core's Adam (AdamW: decoupled weight decay)",
                               only=("adam", "Adam", "adamw", "AdamW"), refusal="only Adam(W) is supported"),
    "optim.optimizer_impl": Ignored("megatron-core's optimizer is used"),
    "optim.override_optimizer_config.*": Ignored("megatron optimizer overrides (CPU offload, precision-aware "
                                                 "optimizer) are not applied"),
    # checkpoints and the trainer
    "checkpoint.save_contents": Ignored(CKPT_CONTENTS), "checkpoint.load_contents": Ignored(CKPT_CONTENTS),
    "trainer.max_ckpt_to_keep": Ignored(CKPT_KEEP), "trainer.default_hdfs_dir": Ignored(HDFS),
    "trainer.logger": Rename("trainer.logger", as_list),
    "trainer.nnodes": Ignored("the ranks come from torchrun / srun"),
    "trainer.n_gpus_per_node": Ignored("the ranks come from torchrun / srun"),
    "trainer.balance_batch": Ignored("token balancing over data-parallel ranks is not implemented"),
}

# ---- main_ppo: verl's main_ppo (and the DAPO / PRIME recipes' entry points) ---------------------------
RL_KEYS: Dict[str, Rule] = {
    "model_engine": Ignored(GROUP), "hydra.*": Ignored("Hydra's own settings"),
    # data
    "data.gen_batch_size": Ignored("each dynamic-sampling round generates the prompts still missing from the "
                                   "batch (not a fixed data.gen_batch_size)"),
    "data.prompt_key": Ignored("the prompt column is 'prompt'", only=("prompt",),
                               refusal="the prompt column must be named 'prompt' (verl's default)"),
    "data.dataloader_num_workers": Ignored("prompts are tokenized once at start (no dataloader workers)"),
    "data.filter_accuracy": Ignored("prompts are not filtered by accuracy", only=(False,),
                                    refusal="PRIME's accuracy filter of prompts is not supported"),
    "data.accuracy_lower_bound": Ignored("used only by data.filter_accuracy"),
    "data.accuracy_upper_bound": Ignored("used only by data.filter_accuracy"),
    "data.oversample_factor": Ignored("used only by data.filter_accuracy"),
    # models (actor, reference, critic)
    "actor_rollout_ref.model.use_remove_padding": Ignored(REMOVE_PADDING),
    "critic.model.use_remove_padding": Ignored(REMOVE_PADDING),
    "actor_rollout_ref.model.enable_gradient_checkpointing":
        Rename("actor_rollout_ref.actor.megatron.recompute_granularity", recompute),
    "critic.model.enable_gradient_checkpointing": Rename("critic.megatron.recompute_granularity", recompute),
    "*.model.trust_remote_code": Ignored(REMOTE_CODE),
    "*.model.lora_rank": Ignored(LORA_OFF, only=(0,), refusal=LORA),
    "*.model.use_fused_kernels": Ignored(KERNELS), "*.model.use_liger": Ignored(KERNELS),
    "actor_rollout_ref.*.fsdp_config.*": Ignored(FSDP), "critic.fsdp.*": Ignored(FSDP),
    "critic.model.fsdp_config.*": Ignored(FSDP),
    "actor_rollout_ref.*.ulysses_sequence_parallel_size": Ignored(ULYSSES),
    "critic.ulysses_sequence_parallel_size": Ignored(ULYSSES),
    **_megatron("actor_rollout_ref.actor.megatron", "actor_rollout_ref.actor.megatron"),
    **_megatron("actor_rollout_ref.ref.megatron", None),
    **_megatron("critic.megatron", "critic.megatron"),
    "actor_rollout_ref.actor.grad_clip": Rename("actor_rollout_ref.actor.optim.clip_grad"),
    "critic.grad_clip": Rename("critic.optim.clip_grad"),
    "actor_rollout_ref.*.use_torch_compile": Ignored(TORCH_COMPILE),
    "actor_rollout_ref.actor.checkpoint.*": Ignored(CKPT_CONTENTS), "critic.checkpoint.*": Ignored(CKPT_CONTENTS),
    # rollout (SGLang)
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": Ignored(OLD_LOG_PROBS),
    "actor_rollout_ref.rollout.log_prob_micro_batch_size": Ignored(OLD_LOG_PROBS),
    "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz": Ignored(OLD_LOG_PROBS),
    "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu": Ignored(OLD_LOG_PROBS),
    "actor_rollout_ref.rollout.enforce_eager": Rename("actor_rollout_ref.rollout.sglang.disable_cuda_graph", when_true),
    "actor_rollout_ref.rollout.enable_chunked_prefill": Ignored(VLLM_ONLY),
    "actor_rollout_ref.rollout.max_num_batched_tokens": Ignored(VLLM_ONLY),
    "actor_rollout_ref.rollout.free_cache_engine": Ignored("the colocated engine keeps its memory between phases "
                                                           "(release/resume is not implemented)"),
    "actor_rollout_ref.rollout.mode": Ignored("generation always runs on SGLang servers (verl's async mode)"),
    "actor_rollout_ref.rollout.engine_kwargs.sglang.*": Rename("actor_rollout_ref.rollout.sglang.*"),
    "actor_rollout_ref.rollout.engine_kwargs.vllm.*": Ignored("vLLM engine arguments; SGLang serves here"),
    "actor_rollout_ref.rollout.checkpoint_engine.update_weights_bucket_megabytes":
        Rename("actor_rollout_ref.rollout.bucket_size_mb"),
    # reward
    "reward_model.reward_manager": Ignored("each row's data_source picks its rule scorer (custom_reward_function "
                                           "overrides it); DAPO's length penalty is reward_model.overlong_buffer.*",
                                           only=("naive", "dapo", None),
                                           refusal="only the naive and dapo reward managers are supported"),
    "reward_model.reward_kwargs.overlong_buffer_cfg.enable": Rename("reward_model.overlong_buffer.enable"),
    "reward_model.reward_kwargs.overlong_buffer_cfg.len": Rename("reward_model.overlong_buffer.len"),
    "reward_model.reward_kwargs.overlong_buffer_cfg.penalty_factor":
        Rename("reward_model.overlong_buffer.penalty_factor"),
    "reward_model.reward_kwargs.overlong_buffer_cfg.log": Ignored("the penalty is part of critic/score"),
    "reward_model.reward_kwargs.max_resp_len": Ignored("the overlong penalty counts from data.max_response_length"),
    "reward_model.model.update": Ignored("no implicit reward model", only=("none",), refusal=PRIME),
    "reward_model.model.beta_train": Ignored("used only by PRIME's implicit reward model"),
    "reward_model.model.optim.*": Ignored("used only by PRIME's implicit reward model"),
    "reward_model.mini_batch_size": Ignored("used only by PRIME's implicit reward model"),
    "reward_model.model.input_tokenizer": Ignored("the reward model reads the actor's token ids"),
    # algorithm
    "algorithm.filter_groups.metric": Rename("algorithm.filter_groups.metric", filter_metric),
    "algorithm.rollout_correction.rollout_is": Rename("algorithm.rollout_is", correction_name),
    "algorithm.rollout_correction.rollout_is_threshold": Rename("algorithm.rollout_is_threshold"),
    # trainer, Ray
    "trainer.logger": Rename("trainer.logger", as_list),
    "trainer.balance_batch": Ignored("token balancing over data-parallel ranks is not implemented: samples stay "
                                     "in prompt order (the loss is per token over the whole mini-batch either way)"),
    "trainer.use_legacy_worker_impl": Ignored("verl's worker implementation switch"),
    "trainer.log_val_generations": Ignored("validation generations are not logged as tables"),
    "trainer.max_actor_ckpt_to_keep": Ignored(CKPT_KEEP), "trainer.max_critic_ckpt_to_keep": Ignored(CKPT_KEEP),
    "trainer.max_ckpt_to_keep": Ignored(CKPT_KEEP),
    "trainer.default_hdfs_dir": Ignored(HDFS), "trainer.del_local_ckpt_after_load": Ignored(HDFS),
    "ray_kwargs.ray_init.num_cpus": Rename("ray_init.num_cpus"),
    "ray_kwargs.ray_init.runtime_env.*": Ignored("Ray workers run this interpreter and environment"),
    "ray_kwargs.timeline_json_file": Ignored("no Ray timeline is written"),
}

# verl's own config names (`--config-name`): our defaults stand for them.
VERL_CONFIG_NAMES = ("ppo_trainer", "ppo_megatron_trainer", "sft_trainer", "sft_trainer_engine", "dapo_trainer",
                     "dapo_megatron_trainer", "prime_trainer")


def rule_for(table: Dict[str, Rule], key: str) -> Tuple[str, Optional[Rule]]:
    """(the matching table key, its rule), or (key, None)."""
    if key in table:
        return key, table[key]
    for pattern, rule in table.items():
        if "*" in pattern and fnmatchcase(key, pattern):
            return pattern, rule
    return key, None


def _target(pattern: str, rule: Rename, key: str) -> str:
    if rule.to.endswith(".*"):
        return rule.to[:-1] + key[len(pattern) - 1:]
    return rule.to


def translate(table: Dict[str, Rule], items: Sequence[Tuple[str, Any]]) -> Tuple[List[Tuple[str, Any]], List[str]]:
    """verl `(key, value)` pairs -> ours, and one note per ignored key. A value the table refuses raises
    ValueError naming the key."""
    out, notes = [], []
    for key, value in items:
        pattern, rule = rule_for(table, key)
        if rule is None:
            out.append((key, value))
        elif isinstance(rule, Ignored):
            if rule.only is not None and value not in rule.only:
                raise ValueError(f"{key}={value!r}: {rule.refusal}")
            notes.append(f"ignored: {key}={value}: {rule.reason}")
        else:
            converted = rule.convert(value) if rule.convert else value
            if converted is not SKIP:
                out.append((_target(pattern, rule, key), converted))
    return out, notes


def known_keys(table: Dict[str, Rule]) -> List[str]:
    """The table's literal keys (for 'did you mean' suggestions)."""
    return [key for key in table if "*" not in key]
