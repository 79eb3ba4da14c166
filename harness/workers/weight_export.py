"""Megatron shards -> a stream of full HF-named tensors, for the rollout engine's weight sync.

Collective over the model-parallel ranks of data-parallel replica 0: every rank of that replica
calls ``export_hf_weights`` and iterates the stream; only the sending rank (first pipeline stage,
tensor-parallel rank 0) gets tensors. Per parameter, in the mapping's order:
  1. the owning pipeline stage all-gathers it over its TP group and unshards it (the mapping's
     transform knows layouts such as the gated fc1's [gate_r; up_r] shards);
  2. a later stage's TP rank 0 sends it to the sender over the pipeline group (one tensor at a time:
     no rank ever holds more than the parameter in flight and the consumer's buckets);
  3. the sender converts it to HF tensors with the mapping and yields them.
The consumer (``SGLangEngine.update_weights``) buckets the stream and ships one bucket while the next
is gathered.

Engines whose transport only opens on its own node (CUDA IPC / shared memory, and the embedded
engine's hand-off) are fed by a rank on their node: ``feeders`` lists those ranks with the sender
(global rank 0) first, and the sender broadcasts each HF tensor to them as it yields it, so every
node's engine gets the same stream from a rank beside it.

    stream = export_hf_weights(model_chunks, spec, feeders=(0, 8, 16, 24))
    push_weights(stream, engine if stream.feeds else None, version=step)
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from harness.models.hf_config import ModelSpec
from harness.models.mapping import Param, model_mapping
from harness.models.sharding import global_names, unwrap
from harness.models.named_tensors import NamedTensor, TensorInfo, WeightStream


SENDER_RANK = 0  # first pipeline stage, tensor-parallel rank 0, data-parallel rank 0 in every rank order
_RELAY_GROUPS: Dict[Tuple[int, ...], object] = {}


class ShardedWeightStream(WeightStream):
    """A ``WeightStream`` that every participating rank must iterate (the others get nothing)."""

    is_sender: bool = False
    feeds: bool = False  # this rank gets the tensors (the sender, and the feeders it relays to)

    def drain(self) -> None:
        for _ in self:
            pass


def _local_params(chunks, mapping) -> Dict[str, Tuple[Param, torch.nn.Parameter]]:
    """This stage's parameters by global Megatron name (checkpoint naming, so both layer specs
    agree); a tied output layer is the embedding and is skipped here."""
    local = {}
    for chunk in chunks:
        names = global_names(chunk)
        for name, parameter in unwrap(chunk).named_parameters():
            p = mapping.find(names[name])
            local.setdefault(p.megatron_name, (p, parameter))
    return local


def _full_shape(p: Param, parameter, tp_size: int, spec) -> Tuple[int, ...]:
    shards = [torch.empty(parameter.shape, device="meta")] * tp_size
    return tuple(p.transform.unshard(shards, spec).shape)


def _relay_group(feeders: Tuple[int, ...]):
    """The process group of the sender and the feeders, made once per set (every rank calls this)."""
    if feeders not in _RELAY_GROUPS:
        _RELAY_GROUPS[feeders] = dist.new_group(list(feeders))
    return _RELAY_GROUPS[feeders]


def export_hf_weights(chunks, spec: ModelSpec, dtype: Optional[torch.dtype] = None,
                      feeders: Sequence[int] = (SENDER_RANK,)) -> ShardedWeightStream:
    """The stream of HF-named full tensors of the model held in ``chunks`` (see the module doc).
    ``dtype``: cast on the sender (default: the parameters' own). ``feeders``: the ranks that feed
    an engine, the sender first; every rank must pass the same ones."""
    from megatron.core import parallel_state as ps

    mapping = model_mapping(spec)
    tp_group, tp_size = ps.get_tensor_model_parallel_group(), ps.get_tensor_model_parallel_world_size()
    tp_rank, pp_rank = ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank()
    pp_group, pp_size = ps.get_pipeline_model_parallel_group(), ps.get_pipeline_model_parallel_world_size()
    participates = ps.get_data_parallel_rank() == 0
    local = _local_params(chunks, mapping)

    # Which stage owns each parameter, with its full shape and dtype: the sender plans the manifest
    # and allocates receive buffers from it.
    mine = {name: (_full_shape(p, t, tp_size, spec), t.dtype) for name, (p, t) in local.items()}
    stages: List[dict] = [mine] * pp_size
    if pp_size > 1 and participates:
        stages = [None] * pp_size
        dist.all_gather_object(stages, mine, group=pp_group)
    owners = {}
    for stage, params in enumerate(stages):
        for name, meta in params.items():
            owners.setdefault(name, (stage, *meta))
    order = [p for p in mapping.params() if p.megatron_name in owners]
    is_sender = participates and pp_rank == 0 and tp_rank == 0

    per_param: List[List[TensorInfo]] = []  # the manifest, parameter by parameter
    if is_sender:
        for p in order:
            shape, param_dtype = owners[p.megatron_name][1:]
            hf = mapping.to_hf(p, torch.empty(shape, device="meta", dtype=param_dtype))
            per_param.append([TensorInfo(n, dtype or param_dtype, tuple(t.shape)) for n, t in hf.items()])
    feeders = tuple(feeders)
    if feeders[0] != SENDER_RANK or is_sender != (dist.get_rank() == SENDER_RANK):
        raise ValueError(f"weight feeders {feeders} must start with the sending rank {SENDER_RANK}")
    relay = _relay_group(feeders) if len(feeders) > 1 else None
    if relay is not None and dist.get_rank() in feeders:
        shared = [per_param]
        dist.broadcast_object_list(shared, src=SENDER_RANK, group=relay)
        per_param = shared[0]
    elif relay is not None:
        relay = None  # not a feeder: this rank takes part in the gathers only
    feeds = is_sender or relay is not None

    def full_tensor(p: Param) -> Optional[torch.Tensor]:
        stage, shape, param_dtype = owners[p.megatron_name]
        value = None
        if stage == pp_rank:
            shard = local[p.megatron_name][1].detach()
            if tp_size > 1 and p.transform.partition_dim is not None:
                shards = [torch.empty_like(shard) for _ in range(tp_size)]
                dist.all_gather(shards, shard.contiguous(), group=tp_group)
                value = p.transform.unshard(shards, spec)
            else:
                value = shard
        if stage != 0 and tp_rank == 0 and pp_rank in (0, stage):
            # Point to point from the owning stage's TP rank 0 to the sender, over the pipeline group.
            if pp_rank == 0:
                value = torch.empty(shape, dtype=param_dtype, device=_device_of(local))
                dist.recv(value, group=pp_group, group_src=stage)
            else:
                dist.send(value.contiguous(), group=pp_group, group_dst=0)
        return value if is_sender else None

    def generate() -> Iterator[NamedTensor]:
        # Per parameter: its gathers and sends, then the broadcast of its HF tensors to the feeders. Every
        # rank keeps this order, so the collectives of different groups never wait on each other.
        for index in range(len(order) if participates else len(per_param) if feeds else 0):
            full = full_tensor(order[index]) if participates else None
            if is_sender:
                for name, tensor in mapping.to_hf(order[index], full).items():
                    tensor = (tensor if dtype is None else tensor.to(dtype)).contiguous()
                    if relay is not None:
                        dist.broadcast(tensor, src=SENDER_RANK, group=relay)
                    yield name, tensor
            elif feeds:
                for info in per_param[index]:
                    tensor = torch.empty(info.shape, dtype=info.dtype, device=_device_of(local))
                    dist.broadcast(tensor, src=SENDER_RANK, group=relay)
                    yield info.name, tensor

    stream = ShardedWeightStream([info for infos in per_param for info in infos], generate())
    stream.is_sender, stream.feeds = is_sender, feeds
    return stream


def _device_of(local) -> torch.device:
    return next(iter(local.values()))[1].device


def push_weights(stream: ShardedWeightStream, engine, version) -> None:
    """Every participating rank calls this after ``export_hf_weights``: the sender and the feeders feed
    their rollout engine (anything with ``update_weights(stream, version)``; None elsewhere), the
    others take part in the gathers. A rank whose engine fails still finishes its part of the
    collectives, so the other ranks finish too instead of waiting forever."""
    if not stream.feeds:
        stream.drain()
        return
    if engine is None:
        raise ValueError(f"rank {dist.get_rank()} feeds a rollout engine (the sending rank: first pipeline stage, "
                         "TP rank 0, DP rank 0; or a feeder) but was given none")
    try:
        engine.update_weights(stream, version)
    except BaseException:
        stream.drain()
        raise
