"""YAML + dotted overrides (`actor_rollout_ref.rollout.n=5`, as in verl) into typed dataclass configs.

verl's keys are translated first (a schema's `VERL_KEYS` table, harness/config/verl_keys.py): renamed
to ours, or ignored with a note the entry point prints. Unknown keys fail with the closest valid key;
values are type-checked by OmegaConf against the dataclass; each config validates itself in
`__post_init__` with errors that name the key.
"""
import difflib
import os
import sys
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Type, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from harness.config import verl_keys
from harness.config.refusal import is_rank_zero, refuse

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


def _closest(schema, key: str, table=None) -> str:
    candidates = all_keys(schema) + verl_keys.known_keys(table or {})
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""


def _merge(schema, update, source: str, table=None):
    try:
        return OmegaConf.merge(schema, update)
    except (ConfigKeyError, ConfigAttributeError) as e:
        key = e.full_key or str(e)
        # OmegaConf names the first unknown level ('engine'); the user wrote a whole key.
        given = [k for k, _ in _leaves(OmegaConf.to_container(update, resolve=False)) if k.startswith(key + ".")]
        key = given[0] if given else key
        raise ConfigError(f"{source}: unknown key '{key}'{_closest(schema, key, table)}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: key '{e.full_key}': {e.msg.splitlines()[0]}") from None


def parse_overrides(overrides: Sequence[str]) -> List[str]:
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError(f"overrides must look like key=value (verl / Hydra style), got: {' '.join(bad)}")
    # Hydra's '+key=value' / '++key=value' (add a key) read the same here: every valid key already exists.
    return [o.lstrip("+") for o in overrides]


def _leaves(node, prefix: str = "") -> List[Tuple[str, Any]]:
    """A nested dict as dotted `(key, value)` pairs; lists and empty dicts are values."""
    pairs = []
    for key, value in node.items():
        if isinstance(value, dict) and value:
            pairs += _leaves(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


def _nested(pairs: Sequence[Tuple[str, Any]]) -> dict:
    root: dict = {}
    for key, value in pairs:
        *parents, last = key.split(".")
        node = root
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    return root


def _translated(table, pairs, source: str, notes: Optional[list]):
    """`pairs` with verl's keys turned into ours (a schema's `VERL_KEYS` table), as a DictConfig."""
    try:
        pairs, ignored = verl_keys.translate(table, pairs)
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None
    if notes is not None:
        notes += ignored
    return OmegaConf.create(_nested(pairs))


def _override_pairs(overrides: Sequence[str]) -> List[Tuple[str, Any]]:
    pairs = []
    for override in parse_overrides(overrides):
        try:
            parsed = OmegaConf.from_dotlist([override])
        except OmegaConfBaseException as e:
            raise ConfigError(f"command line: cannot parse '{override}': {str(e).splitlines()[0]}") from None
        pairs += _leaves(OmegaConf.to_container(parsed, resolve=False))
    return pairs


def load_config(schema: Type[T], config_file: Optional[str] = None, overrides: Sequence[str] = (),
                notes: Optional[list] = None) -> T:
    """`schema` defaults, then the YAML file, then `key=value` overrides; returns a `schema` instance.
    `notes` (a list) receives one line per verl key that has no effect here."""
    merged = OmegaConf.structured(schema)
    table = getattr(schema, "VERL_KEYS", {})
    if config_file:
        if not os.path.isfile(config_file):
            raise ConfigError(f"{config_file}: config file not found")
        loaded = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False)
        merged = _merge(merged, _translated(table, _leaves(loaded), config_file, notes), config_file, table)
    if overrides:
        merged = _merge(merged, _translated(table, _override_pairs(overrides), "command line", notes),
                        "command line", table)
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


def _take_flag(argv: List[str], *flags: str) -> Optional[str]:
    """The value of `--flag VALUE` or `--flag=VALUE` (removed from `argv`), or None."""
    for i, argument in enumerate(argv):
        for flag in flags:
            if argument == flag:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{flag} needs a value")
                value = argv[i + 1]
                del argv[i : i + 2]
                return value
            if argument.startswith(flag + "="):
                del argv[i]
                return argument[len(flag) + 1:]
    return None


def split_config_argument(argv: Sequence[str], notes: Optional[list] = None):
    """`[--config FILE] key=value ...` -> (FILE or None, overrides). Hydra's `--config-path DIR
    --config-name NAME` (verl's form) names FILE too; verl's own config names stand for our defaults."""
    argv = list(argv)
    config_file = _take_flag(argv, "--config", "--config-file")
    path, name = _take_flag(argv, "--config-path", "-cp"), _take_flag(argv, "--config-name", "-cn")
    if name is not None and config_file is None:
        candidate = Path(path or ".") / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
        if candidate.is_file():
            config_file = str(candidate)
        elif Path(name).stem in verl_keys.VERL_CONFIG_NAMES:
            if notes is not None:
                notes.append(f"ignored: --config-name={name}: verl's own defaults; ours (for Megatron) stand for them")
        else:
            raise ConfigError(f"--config-name {name}: {candidate} not found")
    return config_file, argv


def config_from_command_line(schema: Type[T], argv: Sequence[str]) -> Optional[T]:
    """`[--config FILE] key=value ...` -> a `schema` instance, or None after reporting the error (an
    entry point then exits with 2). Each verl key without effect here is announced on one line."""
    notes: List[str] = []
    try:
        config = load_config(schema, *split_config_argument(argv, notes), notes=notes)
    except ConfigError as e:
        refuse(f"config error: {e}")
        return None
    if is_rank_zero():
        for note in notes:
            print(note, file=sys.stderr)
    return config


def to_yaml(config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))
