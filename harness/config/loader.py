"""YAML + dotted overrides (`actor_rollout_ref.rollout.n=5`, as in verl) into typed dataclass configs.

Unknown keys fail with the closest valid key; values are type-checked by OmegaConf against the
dataclass; each config validates itself in `__post_init__` with errors that name the key.
"""
import difflib
import os
from typing import List, Optional, Sequence, Type, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def all_keys(node, prefix: str = "") -> List[str]:
    keys = []
    for key in node.keys() if OmegaConf.is_dict(node) else []:
        path = f"{prefix}{key}"
        keys.append(path)
        child = node._get_node(key)
        if OmegaConf.is_dict(child):
            keys += all_keys(child, path + ".")
    return keys


def _closest(schema, key: str) -> str:
    match = difflib.get_close_matches(key, all_keys(schema), n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""


def _merge(schema, update, source: str):
    try:
        return OmegaConf.merge(schema, update)
    except (ConfigKeyError, ConfigAttributeError) as e:
        key = e.full_key or str(e)
        raise ConfigError(f"{source}: unknown key '{key}'{_closest(schema, key)}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: key '{e.full_key}': {e.msg.splitlines()[0]}") from None


def parse_overrides(overrides: Sequence[str]) -> List[str]:
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError(f"overrides must look like key=value (verl / Hydra style), got: {' '.join(bad)}")
    # Hydra's '+key=value' (add a key) reads the same here: every valid key already exists.
    return [o[1:] if o.startswith("+") else o for o in overrides]


def load_config(schema: Type[T], config_file: Optional[str] = None, overrides: Sequence[str] = ()) -> T:
    """`schema` defaults, then the YAML file, then `key=value` overrides; returns a `schema` instance."""
    merged = OmegaConf.structured(schema)
    if config_file:
        if not os.path.isfile(config_file):
            raise ConfigError(f"{config_file}: config file not found")
        merged = _merge(merged, OmegaConf.load(config_file), config_file)
    if overrides:
        merged = _merge(merged, OmegaConf.from_dotlist(parse_overrides(overrides)), "command line")
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(f"required key(s) not set: {', '.join(missing)}")
    try:
        return OmegaConf.to_object(merged)
    except (ValueError, TypeError) as e:
        where = _failing_section(merged, str(e))
        message = str(e) if not where or str(e).startswith(where) else f"{where}: {e}"
        raise ConfigError(message) from None


def _failing_section(merged, message: str) -> Optional[str]:
    """The deepest section whose own validation raises `message` (a nested dataclass such as a
    `megatron` block does not know where it sits)."""
    found = None
    for key in all_keys(merged):
        node = OmegaConf.select(merged, key)
        if not OmegaConf.is_dict(node):
            continue
        try:
            OmegaConf.to_object(node)
        except (ValueError, TypeError) as e:
            if str(e) == message and (found is None or len(key) > len(found)):
                found = key
    return found


def split_config_argument(argv: Sequence[str]):
    """`[--config FILE] key=value ...` -> (FILE or None, overrides)."""
    argv = list(argv)
    config_file = None
    for flag in ("--config", "--config-file"):
        if flag in argv:
            i = argv.index(flag)
            if i + 1 >= len(argv):
                raise ConfigError(f"{flag} needs a file")
            config_file = argv[i + 1]
            del argv[i : i + 2]
    return config_file, argv


def config_from_command_line(schema: Type[T], argv: Sequence[str]) -> Optional[T]:
    """`[--config FILE] key=value ...` -> a `schema` instance, or None after printing the error (an
    entry point then exits with 2)."""
    import sys

    try:
        return load_config(schema, *split_config_argument(argv))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return None


def to_yaml(config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))
