"""YAML + dotted overrides into typed configs; errors name the key (and the closest valid one)."""
import glob
import os

import pytest

from harness.config.loader import ConfigError, load_config, split_config_argument
from harness.config.sft import SFTConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REQUIRED = ["data.train_files=train.parquet", "model.partial_pretrain=/models/x"]


def test_overrides_reach_typed_fields():
    config = load_config(
        SFTConfig,
        overrides=REQUIRED + ["optim.lr=3e-4", "data.train_files=[a.parquet,b.parquet]", "megatron.tensor_model_parallel_size=2", "trainer.logger=[console,wandb]"],
    )
    assert config.optim.lr == 3e-4 and isinstance(config.optim.lr, float)
    assert list(config.data.train_files) == ["a.parquet", "b.parquet"]
    assert config.megatron.tensor_model_parallel_size == 2
    assert config.trainer.logger == ["console", "wandb"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.max_lenght=5", "unknown key 'data.max_lenght'; did you mean 'data.max_length'?"),
        ("optim.lr=fast", "key 'optim.lr': Value 'fast' of type 'str' could not be converted to Float"),
        ("trainer.logger=[console,mlflow]", "trainer.logger: unknown ['mlflow']"),
        ("megatron.sequence_parallel=true", "sequence_parallel=true needs tensor_model_parallel_size > 1"),
        ("data.truncation=middle", "data.truncation='middle': must be one of error, left, right"),
        ("novalue", "overrides must look like key=value"),
    ],
)
def test_bad_config_names_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(SFTConfig, overrides=REQUIRED + [override])
    assert message in str(error.value)


def test_missing_required_key_is_named():
    with pytest.raises(ConfigError, match="required key\\(s\\) not set: model.partial_pretrain"):
        load_config(SFTConfig, overrides=["data.train_files=x"])


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.5\n  lr_sheduler: cosine\n")
    with pytest.raises(ConfigError, match=f"{path}: unknown key 'optim.lr_sheduler'; did you mean 'optim.lr_scheduler'"):
        load_config(SFTConfig, str(path), REQUIRED)
    path.write_text("optim:\n  lr: 0.5\n")
    config = load_config(SFTConfig, *split_config_argument(["--config", str(path), *REQUIRED, "optim.lr=0.25"]))
    assert config.optim.lr == 0.25


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "sft_*.yaml"))), ids=os.path.basename)
def test_shipped_sft_configs_load(path):
    config = load_config(SFTConfig, path, REQUIRED)
    assert config.megatron.tensor_model_parallel_size >= 1


# Published shapes (config.json of the Hugging Face releases) the shipped layouts must divide.
PUBLISHED = {
    "qwen2.5_7b": dict(architectures=["Qwen2ForCausalLM"], hidden_size=3584, intermediate_size=18944, num_attention_heads=28,
                       num_key_value_heads=4, num_hidden_layers=28, vocab_size=152064, rope_theta=1000000.0),
    "qwen2.5_32b": dict(architectures=["Qwen2ForCausalLM"], hidden_size=5120, intermediate_size=27648, num_attention_heads=40,
                        num_key_value_heads=8, num_hidden_layers=64, vocab_size=152064, rope_theta=1000000.0),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_shipped_layouts_fit_the_published_models(name):
    from harness.models import load_model_spec

    config = load_config(SFTConfig, os.path.join(ROOT, "configs", f"sft_{name}.yaml"), REQUIRED)
    load_model_spec(PUBLISHED[name]).validate_parallel(config.megatron)
