"""HF safetensors <-> megatron torch_dist checkpoints, streamed through the architecture mapping.

``hf_to_mcore`` reads the HF sources of one Megatron chunk (a parameter of one layer, or a row block
of the vocabulary) at a time and writes it; ``mcore_to_hf`` loads one parameter of one layer at a time
and writes HF shards tensor by tensor. Peak memory is a few times the largest such tensor (sources,
transformed copy, the previous chunk being written), whatever the number of layers. Both check the
input against the HF config before writing (names and shapes, naming the offender), and write into
a temporary directory beside the output that is renamed into place only when complete.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch

import harness
from harness.checkpoint import torch_dist
from harness.config.parallel import ParallelConfig
from harness.models.hf_config import ModelSpec, load_model_spec
from harness.models.mapping import VOCAB, ModelMapping, Param, model_mapping

METADATA_FILE = "harness_conversion.json"
# Files an HF model directory carries beside its weights; copied as they are (config.json is
# rewritten with the output dtype).
HF_SIDE_FILES = ("generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
                 "tokenizer.model", "chat_template.jinja", "chat_template.json")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3
# Embedding and output layer are written in row blocks of this size: in big models they are larger
# than a whole transformer layer (Qwen2.5-32B: 1.6 GB each, a layer 1.0 GB in bf16).
VOCAB_BLOCK_BYTES = 64 * 1024**2
# HF checkpoints of some Llama versions carry rotary inverse frequencies: a buffer derived from the
# config, not a weight. Everything else that the mapping does not name is an error.
IGNORED_HF_SUFFIXES = ("rotary_emb.inv_freq",)
# megatron's linear layers save an ``_extra_state`` object per layer (None outside TE's fp8) and its
# loader expects one for each; these are the linears of every architecture we map.
EXTRA_STATE_MODULES = ("decoder.layers.self_attention.linear_qkv",
                       "decoder.layers.self_attention.linear_proj",
                       "decoder.layers.mlp.linear_fc1", "decoder.layers.mlp.linear_fc2")


class ConversionError(ValueError):
    """The input cannot be converted faithfully; the message names the file, tensor or key."""


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


@contextmanager
def staged_output(output: str | Path, force: bool) -> Iterator[Path]:
    """A temporary directory beside ``output``, renamed to it when the block completes.

    An existing non-empty ``output`` is an error without ``force``; with it, the old directory is
    removed only after the new one is complete. On any error the temporary directory is removed.
    """
    output = Path(output).absolute()
    if output.exists() and not force and (not output.is_dir() or any(output.iterdir())):
        raise ConversionError(f"{output} exists and is not empty; pass --force to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        yield staging
        if output.exists():
            replaced = output.with_name(f".{output.name}.replaced-{os.getpid()}")
            os.rename(output, replaced)
            os.rename(staging, output)
            if replaced.is_dir():
                shutil.rmtree(replaced)
            else:
                replaced.unlink()
        else:
            os.rename(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def expected_hf_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every weight transformers builds from the config (on the meta device)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config_dict = dict(spec.hf_config)
    config = AutoConfig.for_model(config_dict.pop("model_type", spec.architecture), **config_dict)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def megatron_shape(mapping: ModelMapping, p: Param, hf_shapes: Mapping[str, Sequence[int]]):
    """The full Megatron shape of ``p``, by running its transform on meta tensors."""
    sources = [torch.empty(tuple(hf_shapes[n]), device="meta") for n in p.hf_names]
    return tuple(mapping.to_megatron(p, sources).shape)


def check_hf_tensors(mapping: ModelMapping, found: Mapping[str, Sequence[int]], where: str) -> None:
    """Errors naming the missing, extra and wrongly shaped tensors of ``found`` (name -> shape)."""
    expected = expected_hf_shapes(mapping.spec)
    wanted = mapping.hf_names()
    problems = [f"missing tensor {n} (shape {list(expected[n])})" for n in wanted if n not in found]
    problems += [f"tensor {n} has shape {list(found[n])}, the config needs {list(expected[n])}"
                 for n in wanted if n in found and tuple(found[n]) != expected[n]]
    problems += [f"extra tensor {n} (not a weight of {mapping.spec.hf_architecture} with this "
                 f"config{', which ties the embeddings' if n == 'lm_head.weight' else ''})"
                 for n in sorted(set(found) - set(wanted)) if not n.endswith(IGNORED_HF_SUFFIXES)]
    _raise_problems(problems, f"{where} does not match its config.json")


def _raise_problems(problems: Sequence[str], what: str, shown: int = 20) -> None:
    if problems:
        more = [f"... and {len(problems) - shown} more"] if len(problems) > shown else []
        raise ConversionError("\n  ".join([f"{what}:", *problems[:shown], *more]))


def copy_hf_side_files(source: Path, target: Path, dtype: torch.dtype) -> None:
    """config.json (with ``dtype`` recorded) and the tokenizer and generation files."""
    config = json.loads((source / "config.json").read_text())
    name = str(dtype).removeprefix("torch.")
    for key in ("dtype", "torch_dtype"):
        if key in config or key == "torch_dtype" and "dtype" not in config:
            config[key] = name
    (target / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for file in HF_SIDE_FILES:
        if (source / file).exists():
            shutil.copy2(source / file, target / file)


def megatron_chunks(mapping: ModelMapping, reader, dtype: torch.dtype,
                    vocab_block_bytes: int = VOCAB_BLOCK_BYTES) -> list:
    """The lazy checkpoint chunks of every parameter: one per parameter and layer, read from HF
    only when written; vocabulary tensors (larger than a layer in big models) in row blocks."""
    from harness.checkpoint.streaming import LazyChunk, stacked_chunk

    spec = mapping.spec
    hf_shapes = {n: i.shape for n, i in reader.infos().items()}

    def produce(p: Param):
        return lambda: mapping.to_megatron(p, [reader.read(n) for n in p.hf_names]).to(dtype)

    def produce_rows(p: Param, start: int, stop: int):
        (name,) = p.hf_names
        rows = (min(start, spec.vocab_size), min(stop, spec.vocab_size))
        return lambda: VOCAB.to_megatron_rows(reader.read(name, rows), start, stop, spec).to(dtype)

    chunks = []
    for p in mapping.params():
        shape = megatron_shape(mapping, p, hf_shapes)
        key = p.mapping.checkpoint_key
        if p.transform is not VOCAB:
            chunks.append(stacked_chunk(key, p.layer, spec.num_layers, shape, dtype, produce(p)))
            continue
        rows, row_shape = shape[0], shape[1:]
        block = max(1, vocab_block_bytes // (math.prod(row_shape) * dtype.itemsize))
        for start in range(0, rows, block):
            stop = min(start + block, rows)
            chunks.append(LazyChunk(key, shape, (start, *(0 for _ in row_shape)),
                                    (stop - start, *row_shape), dtype, produce_rows(p, start, stop)))
    return chunks


def hf_to_mcore(hf_path: str | Path, output: str | Path, *, dtype: torch.dtype | None = None,
                parallel: ParallelConfig | None = None, force: bool = False,
                vocab_block_bytes: int = VOCAB_BLOCK_BYTES) -> Path:
    """Converts an HF model directory to a torch_dist checkpoint loadable at any TP/PP.

    ``parallel``, when given, is checked against the model before anything is written (the
    checkpoint itself does not depend on it).
    """
    from harness.checkpoint.streaming import save_lazy, stacked_object_key
    from harness.models.safetensors_io import SafetensorsReader

    hf_path = Path(hf_path)
    spec = load_model_spec(hf_path)
    if parallel is not None:
        spec.validate_parallel(parallel)
    mapping = model_mapping(spec)
    reader = SafetensorsReader(hf_path)
    infos = reader.infos()
    check_hf_tensors(mapping, {n: i.shape for n, i in infos.items()}, f"{hf_path} (weights)")
    if dtype is None:
        dtype = infos[mapping.hf_names()[0]].dtype

    chunks = megatron_chunks(mapping, reader, dtype, vocab_block_bytes)
    extra_states = {stacked_object_key(f"{module}._extra_state", layer, spec.num_layers): None
                    for module in EXTRA_STATE_MODULES for layer in range(spec.num_layers)}
    with staged_output(output, force) as staging:
        # What save_checkpoint writes for a model without optimizer: load_checkpoint accepts it.
        save_lazy(staging, chunks, extra_states, common_state={"extra": {}})
        torch_dist.write_marker(staging, has_optimizer=False)
        copy_hf_side_files(hf_path, staging, dtype)
        metadata = {
            "format": "torch_dist",
            "architecture": spec.architecture,
            "hf_architecture": spec.hf_architecture,
            "source": str(hf_path.absolute()),
            "dtype": dtype_name(dtype),
            "harness_version": harness.__version__,
        }
        if parallel is not None:
            metadata["checked_parallel"] = {
                "tensor_model_parallel_size": parallel.tensor_model_parallel_size,
                "pipeline_model_parallel_size": parallel.pipeline_model_parallel_size,
            }
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return Path(output)


def mcore_to_hf(mcore_path: str | Path, output: str | Path, *, dtype: torch.dtype | None = None,
                hf_config: str | Path | None = None, force: bool = False,
                max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> Path:
    """Converts a torch_dist checkpoint (any TP/PP it was saved at) to an HF model directory.

    The HF config (and tokenizer) come from ``hf_config`` or, by default, from beside the checkpoint
    (where ``hf_to_mcore`` puts them).
    """
    from harness.checkpoint.streaming import CheckpointReader, load_slice
    from harness.models.safetensors_io import ShardedWriter, TensorInfo, plan_shards

    mcore_path = Path(mcore_path)
    config_dir = Path(hf_config) if hf_config is not None else mcore_path
    if not (config_dir / "config.json").exists():
        raise ConversionError(f"{config_dir}: no config.json (the HF config of the model); "
                              f"pass --hf-config DIR")
    if not (mcore_path / "metadata.json").exists():
        raise ConversionError(f"{mcore_path}: not a torch_dist checkpoint (no metadata.json)")
    spec = load_model_spec(config_dir)
    mapping = model_mapping(spec)
    reader = CheckpointReader(mcore_path)
    stored = reader.tensor_metadata()
    hf_shapes = expected_hf_shapes(spec)
    full_shapes = {p: megatron_shape(mapping, p, hf_shapes) for p in mapping.params()}
    check_checkpoint_tensors(mapping, full_shapes, stored, str(mcore_path))
    stored_dtype = stored[next(mapping.params()).mapping.checkpoint_key][1]
    dtype = dtype or stored_dtype

    infos = [TensorInfo(name, dtype, tuple(hf_shapes[name])) for p in mapping.params()
             for name in p.hf_names]
    with staged_output(output, force) as staging:
        with ShardedWriter(staging, plan_shards(infos, max_shard_bytes)) as writer:
            # One parameter of one layer at a time; popping each HF tensor as it is written frees
            # the loaded tensor before the next one is loaded.
            for p in mapping.params():
                hf = mapping.to_hf(p, load_slice(reader, p.mapping.checkpoint_key, p.layer,
                                                 full_shapes[p], stored_dtype))
                for name in p.hf_names:
                    writer.write(name, hf.pop(name).to(dtype))
        copy_hf_side_files(config_dir, staging, dtype)
    return Path(output)


def check_checkpoint_tensors(mapping: ModelMapping, full_shapes: Mapping[Param, tuple],
                             stored: Mapping[str, tuple], where: str) -> None:
    """Errors naming checkpoint keys that are missing, wrongly shaped, or model keys the config
    does not have (e.g. an output layer for a model whose config ties the embeddings)."""
    expected = {}
    for p, shape in full_shapes.items():
        key = p.mapping.checkpoint_key
        expected[key] = (mapping.spec.num_layers, *shape) if p.layer is not None else shape
    problems = [f"missing tensor {k} (shape {list(s)})" for k, s in expected.items()
                if k not in stored]
    problems += [f"tensor {k} has shape {list(stored[k][0])}, the config needs {list(s)}"
                 for k, s in expected.items() if k in stored and tuple(stored[k][0]) != s]
    model_prefixes = ("embedding.", "decoder.", "output_layer.")
    problems += [f"extra tensor {k} (not a weight of {mapping.spec.hf_architecture} with this config)"
                 for k in sorted(stored) if k.startswith(model_prefixes) and k not in expected]
    _raise_problems(problems, f"{where} does not match the HF config")


def add_tool_arguments(parser, source_dtype: str) -> None:
    """The options both conversion tools share."""
    parser.add_argument("--dtype", choices=sorted(DTYPES), help=f"default: {source_dtype}")
    parser.add_argument("--verify", action="store_true",
                        help="compare HF and Megatron logits after converting (TP=1, fp32)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="--verify's largest allowed |logit difference| (default 1e-4)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --output")


def run_tool(convert, args, hf_and_mcore) -> int:
    """A tool's body: ``convert()`` returns the output; input errors exit 2 with the message,
    ``--verify`` beyond tolerance exits 1. ``hf_and_mcore(output)`` names the two sides."""
    from harness.checkpoint.verify import report_verification

    start = time.perf_counter()
    try:
        output = convert()
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {output} in {time.perf_counter() - start:.1f} s")
    if args.verify:
        return report_verification(*hf_and_mcore(output), args.tolerance)
    return 0
