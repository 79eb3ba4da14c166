"""verl's own launch command lines (tests/config/verl_command_lines.py) load as they are: every key
is one of ours with its value, renamed to ours, or announced as ignored; typos still fail naming the
closest key; Hydra's --config-path/--config-name work."""
import pytest
from omegaconf import OmegaConf

from harness.config import verl_keys
from harness.config.loader import ConfigError, _override_pairs, load_config, split_config_argument
from harness.config.rl import RLConfig
from harness.config.sft import SFTConfig
from tests.config.verl_command_lines import REFUSED, RL_LINES, RL_REQUIRED, SFT_LINES, SFT_REQUIRED, arguments

LINES = [("sft", name) for name in SFT_LINES] + [("ppo", name) for name in RL_LINES]
SCHEMAS = {"sft": (SFTConfig, SFT_REQUIRED, SFT_LINES), "ppo": (RLConfig, RL_REQUIRED, RL_LINES)}


def load_line(kind: str, name: str):
    schema, required, lines = SCHEMAS[kind]
    notes = []
    config_file, overrides = split_config_argument(required + arguments(lines[name]), notes)
    return schema, overrides, load_config(schema, config_file, overrides, notes=notes), notes


def _plain(value):
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


@pytest.mark.parametrize("kind, name", [line for line in LINES if line[1] not in REFUSED], ids=lambda v: str(v))
def test_every_key_of_a_verl_line_has_its_meaning_or_is_announced(kind, name):
    schema, overrides, config, notes = load_line(kind, name)
    loaded = OmegaConf.structured(config)
    announced = {note.split("=", 1)[0].removeprefix("ignored: ") for note in notes}
    expected = {}  # our key -> the value it must hold (the last one given wins, as in Hydra)
    for key, value in _override_pairs(overrides):
        pattern, rule = verl_keys.rule_for(schema.VERL_KEYS, key)
        if isinstance(rule, verl_keys.Ignored):
            assert key in announced, f"{key} is ignored without a note"
            continue
        if isinstance(rule, verl_keys.Rename):
            converted = rule.convert(value) if rule.convert else value
            if converted is verl_keys.SKIP:
                continue
            key, value = verl_keys._target(pattern, rule, key), converted
        expected[key] = value
    for key, value in expected.items():
        assert _plain(OmegaConf.select(loaded, key)) == value, f"{name}: {key}"
    assert len(notes) == len(announced), "one line per ignored key"


@pytest.mark.parametrize("name, message", sorted(REFUSED.items()))
def test_verl_lines_asking_for_unbuilt_features_are_refused_naming_the_key(name, message):
    kind = "sft" if name in SFT_LINES else "ppo"
    with pytest.raises(ConfigError, match="command line: " + message):
        load_line(kind, name)


def test_char_count_grpo_keys_mean_what_they_mean_in_verl():
    _, _, config, notes = load_line("ppo", "char_count/train_grpo.sh")
    arr = config.actor_rollout_ref
    # gradient checkpointing -> Megatron's full activation recompute, one layer at a time
    assert arr.actor.megatron.recompute_options() == {"recompute_granularity": "full", "recompute_method": "uniform",
                                                      "recompute_num_layers": 1}
    assert arr.actor.use_dynamic_bsz and arr.actor.ppo_max_token_len_per_gpu == 5000
    assert arr.ref.log_prob_use_dynamic_bsz and arr.ref.log_prob_max_token_len_per_gpu == 5000  # verl's defaults
    assert arr.rollout.sglang == {"disable_cuda_graph": True}  # enforce_eager, as verl passes it to SGLang
    assert config.data.filter_overlong_prompts is False and config.data.truncation == "error"
    assert config.trainer.logger == ["console", "tensorboard"] and config.trainer.critic_warmup == 0
    assert config.custom_reward_function.name == "char_count_reward_function"
    assert any(note.startswith("ignored: actor_rollout_ref.actor.fsdp_config.param_offload=True: an FSDP engine")
               for note in notes)


def test_dapo_megatron_recipe_keys():
    _, _, config, notes = load_line("ppo", "dapo/test_dapo_7b_math_megatron.sh")
    arr = config.actor_rollout_ref
    assert notes[0].startswith("ignored: --config-name=ppo_megatron_trainer.yaml: verl's own defaults")
    assert (arr.actor.megatron.tensor_model_parallel_size, arr.actor.megatron.pipeline_model_parallel_size) == (4, 2)
    assert arr.ref.megatron.same_layout(arr.actor.megatron)
    assert arr.actor.optim.lr_warmup_steps == 10 and arr.actor.optim.clip_grad == 1.0
    assert (arr.actor.clip_ratio_low, arr.actor.clip_ratio_high, arr.actor.clip_ratio_c) == (0.2, 0.28, 10.0)
    buffer = config.reward_model.overlong_buffer
    assert (buffer.enable, buffer.len, buffer.penalty_factor) == (True, 4096, 1.0)
    val = arr.rollout.val_kwargs
    assert (val.do_sample, val.temperature, val.top_p, val.top_k, val.n) == (True, 1.0, 0.7, -1, 1)
    assert config.data.truncation == "left"
    offload = [n for n in notes if "offload" in n]
    assert len(offload) == 4 and all("host offload is not implemented" in n for n in offload)


def test_dapo_recipe_filter_groups_and_sglang_knobs():
    _, _, config, notes = load_line("ppo", "dapo/run_dapo_qwen2.5_32b.sh")
    assert config.algorithm.filter_groups.enable and config.algorithm.filter_groups.metric == "score"
    assert config.actor_rollout_ref.actor.optim.clip_grad == 1.0  # actor.grad_clip, verl's older name
    assert config.actor_rollout_ref.actor.megatron.recompute_granularity == "full"
    assert {"data.gen_batch_size", "actor_rollout_ref.rollout.max_num_batched_tokens",
            "actor_rollout_ref.rollout.enable_chunked_prefill", "reward_model.reward_manager"} <= {
        note.split("=", 1)[0].removeprefix("ignored: ") for note in notes}


def test_grpo_32b_rollout_keys():
    _, _, config, _ = load_line("ppo", "grpo_trainer/run_qwen2_5_32b_fsdp.sh")
    rollout = config.actor_rollout_ref.rollout
    assert rollout.bucket_size_mb == 4096 and rollout.sglang == {}  # enforce_eager=False: SGLang's default
    assert config.world_size == 16 and config.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu == 2


def test_sft_engine_and_optimizer_keys():
    _, _, config, notes = load_line("sft", "char_count/train_sft.sh (megatron)")
    assert config.model.partial_pretrain == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert config.optim.lr_scheduler == "cosine" and config.optim.warmup_steps_ratio == 0.01
    assert config.optim.min_lr_ratio == pytest.approx(0.1)  # min_lr 2e-6 of lr 2e-5
    assert config.data.use_dynamic_bsz and config.data.max_token_len_per_gpu == 1792
    assert config.megatron.tensor_model_parallel_size == 1 and config.megatron.virtual_pipeline_model_parallel_size is None
    assert "ignored: engine=megatron: a Hydra config-group choice" in " ".join(notes)
    _, _, fsdp, _ = load_line("sft", "char_count/train_sft.sh (fsdp)")
    assert fsdp.optim.min_lr_ratio == 0.1 and fsdp.optim.lr_scheduler == "cosine"
    _, _, older, _ = load_line("sft", "retool/run_qwen2-32b_sft.sh")
    assert older.data.messages_key == "messages" and older.model.partial_pretrain.endswith("Qwen2.5-32B-Instruct")
    _, _, mfsdp, _ = load_line("sft", "sft/gsm8k/run_qwen_megatron_fsdp.sh")
    assert mfsdp.trainer.logger == ["console", "wandb", "file"] and mfsdp.megatron.tensor_model_parallel_size == 4
    _, _, seed, _ = load_line("sft", "sft/gsm8k/run_seed_oss_36b_fsdp.sh")
    assert seed.trainer.logger == ["console"]  # a bare string, as Hydra takes it


@pytest.mark.parametrize("kind, override, closest", [
    ("ppo", "actor_rollout_ref.actor.use_dynamic_bzs=True", "actor_rollout_ref.actor.use_dynamic_bsz"),
    ("ppo", "data.truncaton=left", "data.truncation"),
    ("ppo", "actor_rollout_ref.model.use_remove_paddin=True", "actor_rollout_ref.model.use_remove_padding"),
    ("ppo", "trainer.critic_warmpu=1", "trainer.critic_warmup"),
    ("sft", "model.pth=/m", "model.path"),
    ("sft", "engine.tensor_model_paralel_size=2", "engine.tensor_model_parallel_size"),
])
def test_typos_still_fail_with_the_closest_key(kind, override, closest):
    schema, required, _ = SCHEMAS[kind]
    with pytest.raises(ConfigError, match=f"unknown key .*; did you mean '{closest}'"):
        load_config(schema, None, required + [override])


def test_hydra_config_path_and_name(tmp_path):
    (tmp_path / "my_run.yaml").write_text("optim:\n  lr: 0.125\n")
    for argv in (["--config-path", str(tmp_path), "--config-name", "my_run"],
                 [f"--config-path={tmp_path}", "--config-name=my_run.yaml"]):
        config_file, overrides = split_config_argument(argv + SFT_REQUIRED)
        assert config_file == str(tmp_path / "my_run.yaml") and overrides == SFT_REQUIRED
        assert load_config(SFTConfig, config_file, overrides).optim.lr == 0.125
    notes = []
    assert split_config_argument(["--config-name", "sft_trainer"], notes) == (None, [])
    assert notes == ["ignored: --config-name=sft_trainer: verl's own defaults; ours (for Megatron) stand for them"]
    with pytest.raises(ConfigError, match="--config-name nowhere: .*nowhere.yaml not found"):
        split_config_argument(["--config-path", str(tmp_path), "--config-name", "nowhere"])


def test_verl_keys_in_a_yaml_file_are_translated_too(tmp_path):
    path = tmp_path / "verl_style.yaml"
    path.write_text("model:\n  path: /m\n  use_remove_padding: true\ntrainer:\n  logger: console\n")
    notes = []
    config = load_config(SFTConfig, str(path), ["data.train_files=x"], notes=notes)
    assert config.model.partial_pretrain == "/m" and config.trainer.logger == ["console"]
    assert notes == [f"ignored: model.use_remove_padding=True: {verl_keys.REMOVE_PADDING}"]
