"""A megatron torch_dist checkpoint written and read one chunk at a time (memory-bounded conversion).

Writing: a ``torch.distributed.checkpoint`` (DCP) save plan is made of ``LazyChunk``s (key, global
shape, offset, shape, dtype, producer); the planner's ``resolve_data`` calls a chunk's producer only
when the file writer reaches it, so one chunk is in memory at a time. The chunks are laid out as
megatron lays out a full model: per-layer parameters stacked on a leading layer axis, replica 0, no
TP split; megatron's loader reshards them to any TP/PP like any checkpoint. Small objects (the
per-layer ``_extra_state``) are pickled as megatron pickles its ShardedObjects, and ``common.pt``
and ``metadata.json`` go beside, as ``dist_checkpointing.save`` writes them.

Reading: one parameter slice (one layer of a stacked key) at a time, through a DCP load planner.
megatron's own loader cannot load a slice in a one-process world (it assumes the other fragments
live on other ranks). No process group is needed either way.
"""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch.distributed.checkpoint import (CheckpointException, DefaultLoadPlanner,
                                          DefaultSavePlanner, FileSystemReader, FileSystemWriter,
                                          LoadPlan, SavePlan)
from torch.distributed.checkpoint.metadata import (ChunkStorageMetadata, Metadata, MetadataIndex,
                                                   TensorProperties, TensorStorageMetadata)
from torch.distributed.checkpoint.planner import TensorWriteData, WriteItem, WriteItemType
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list


@dataclass(frozen=True)
class LazyChunk:
    """One chunk of a checkpoint tensor; ``produce()`` returns its data (any shape of that numel)."""

    key: str
    global_shape: tuple[int, ...]
    offset: tuple[int, ...]
    shape: tuple[int, ...]
    dtype: torch.dtype
    produce: Callable[[], torch.Tensor]


class _LazySavePlanner(DefaultSavePlanner):
    """Plans the given chunks instead of a state dict's tensors, and produces each when written."""

    def __init__(self, chunks: Sequence[LazyChunk], objects: Mapping[str, object]):
        super().__init__()
        self._chunks = {(c.key, torch.Size(c.offset)): c for c in chunks}
        self._objects = objects
        self._previous: torch.Tensor | None = None

    def create_local_plan(self) -> SavePlan:
        items = [WriteItem(index=MetadataIndex(key), type=WriteItemType.BYTE_IO)
                 for key in self._objects]
        items += [
            WriteItem(
                index=MetadataIndex(chunk.key, torch.Size(chunk.offset)),
                type=WriteItemType.SHARD,
                tensor_data=TensorWriteData(
                    chunk=ChunkStorageMetadata(torch.Size(chunk.offset), torch.Size(chunk.shape)),
                    properties=TensorProperties(dtype=chunk.dtype),
                    size=torch.Size(chunk.global_shape),
                ),
            )
            for chunk in self._chunks.values()
        ]
        self.plan = SavePlan(items, planner_data={})
        return self.plan

    def resolve_data(self, write_item: WriteItem) -> torch.Tensor | io.BytesIO:
        if write_item.type == WriteItemType.BYTE_IO:
            buffer = io.BytesIO()
            # megatron stores the data of the ShardedObjects under one key as a list.
            torch.save([self._objects[write_item.index.fqn]], buffer)
            return buffer
        # torch's file writer keeps the last tensor written under each key (for its safetensors
        # format): a whole layer's worth. Its serial loader (see save_lazy) resolves an item only
        # after writing the one before, so that one's memory can be released now.
        if self._previous is not None:
            self._previous.untyped_storage().resize_(0)
            self._previous = None
        chunk = self._chunks[(write_item.index.fqn, write_item.index.offset)]
        data = chunk.produce()
        if data.dtype != chunk.dtype or data.numel() != torch.Size(chunk.shape).numel():
            raise ValueError(f"{chunk.key} at {list(chunk.offset)}: produced {data.dtype} "
                             f"{list(data.shape)}, planned {chunk.dtype} {list(chunk.shape)}")
        self._previous = data.reshape(chunk.shape).contiguous()
        return self._previous


def save_lazy(directory: str | Path, chunks: Sequence[LazyChunk],
              objects: Mapping[str, object] | None = None,
              common_state: Mapping | None = None) -> None:
    """Writes ``chunks`` and ``objects`` ({ShardedObject unique key: picklable value}) as a
    torch_dist checkpoint into the existing, empty ``directory``."""
    from torch.distributed.checkpoint import save
    from megatron.core.dist_checkpointing.core import CheckpointingConfig, save_config
    from megatron.core.dist_checkpointing.strategies.common import COMMON_STATE_FNAME

    directory = Path(directory)
    # One thread and no copy-ahead: the file writer then resolves (produces) one chunk at a time,
    # each after the previous one is written, also where CUDA is present.
    writer = FileSystemWriter(directory, single_file_per_rank=True, thread_count=1,
                              per_thread_copy_ahead=0)
    try:
        save({}, storage_writer=writer, planner=_LazySavePlanner(chunks, objects or {}),
             no_dist=True)
    except CheckpointException as e:
        # DCP wraps each rank's failure; with one process, the failure itself is the clear error.
        failures = [f[0] if isinstance(f, tuple) else f for f in e.failures.values()]
        if len(failures) == 1 and isinstance(failures[0], BaseException):
            raise failures[0] from None
        raise
    torch.save(dict(common_state or {}), directory / COMMON_STATE_FNAME)
    save_config(CheckpointingConfig(sharded_backend="torch_dist"), str(directory))


def stacked_chunk(key: str, layer: int | None, num_layers: int, shape: Sequence[int],
                  dtype: torch.dtype, produce: Callable[[], torch.Tensor]) -> LazyChunk:
    """The chunk of one parameter as megatron lays it out: per-layer parameters are stacked into one
    tensor with the global layer as leading axis (``layer=None``: a parameter outside the layers)."""
    shape = tuple(shape)
    if layer is None:
        return LazyChunk(key, shape, (0,) * len(shape), shape, dtype, produce)
    return LazyChunk(key, (num_layers, *shape), (layer,) + (0,) * len(shape), (1, *shape), dtype,
                     produce)


def stacked_object_key(key: str, layer: int, num_layers: int) -> str:
    """The on-disk key of a per-layer ShardedObject (as megatron names it)."""
    from megatron.core.dist_checkpointing import ShardedObject

    return ShardedObject(key, None, (num_layers,), (layer,), replica_id=0).unique_key


class CheckpointReader(FileSystemReader):
    """A torch_dist checkpoint directory whose metadata is read once for many slice loads."""

    @functools.cache
    def read_metadata(self) -> Metadata:
        return super().read_metadata()

    def tensor_metadata(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Global shape and dtype of every tensor."""
        return {key: (tuple(md.size), md.properties.dtype)
                for key, md in self.read_metadata().state_dict_metadata.items()
                if isinstance(md, TensorStorageMetadata)}


class _SliceLoadPlanner(DefaultLoadPlanner):
    """Reads the chunk (offset, buffer shape) of one key into the buffer, whatever chunks the
    checkpoint was saved in (any TP/PP): DCP's resharding computes the overlapping reads."""

    def __init__(self, key: str, offset: Sequence[int], buffer: torch.Tensor):
        super().__init__()
        self._key, self._offset, self._buffer = key, torch.Size(offset), buffer

    def create_local_plan(self) -> LoadPlan:
        chunk = ChunkStorageMetadata(self._offset, self._buffer.shape)
        self.plan = LoadPlan(create_read_items_for_chunk_list(
            self._key, self.metadata.state_dict_metadata[self._key], [chunk]))
        return self.plan

    def lookup_tensor(self, index: MetadataIndex) -> torch.Tensor:
        return self._buffer


def load_slice(reader: CheckpointReader, key: str, layer: int | None, shape: Sequence[int],
               dtype: torch.dtype) -> torch.Tensor:
    """Layer ``layer`` of a stacked key (the whole tensor when layer is None), ``shape`` without
    the layer axis. Reads only the stored chunks that overlap it, whatever TP/PP wrote them."""
    from torch.distributed.checkpoint import load

    if layer is None:
        offset, buffer = (0,) * len(shape), torch.empty(tuple(shape), dtype=dtype)
    else:
        offset, buffer = (layer,) + (0,) * len(shape), torch.empty((1, *shape), dtype=dtype)
    load({key: buffer}, storage_reader=reader, planner=_SliceLoadPlanner(key, offset, buffer),
         no_dist=True)
    return buffer if layer is None else buffer[0]
