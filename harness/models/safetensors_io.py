"""Memory-bounded safetensors I/O for HF checkpoints: lazy reading, streamed sharded writing.

Reading parses every file's header up front (so a truncated or corrupt file fails before anything is
written) and reads one tensor at a time with plain file reads: no memory map whose pages would pile
up in the resident set while a 32B model streams through. Writing knows every tensor's name, dtype and
shape in advance (the mapping plans them), writes each file's header first and then the tensors one
by one as they are produced. The format is the one the ``safetensors`` library reads
(8-byte little-endian header length, JSON header, raw little-endian data).
"""
from __future__ import annotations

import ctypes
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

from harness.models.named_tensors import TensorInfo

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# A corrupt length field must not make us allocate gigabytes for a "header".
MAX_HEADER_BYTES = 100 * 1024 * 1024

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


class SafetensorsError(ValueError):
    """A missing, truncated or corrupt safetensors file or index (the message names the file)."""


@dataclass(frozen=True)
class _Stored:
    info: TensorInfo
    path: Path
    offset: int  # absolute position in the file


class SafetensorsReader:
    """The tensors of an HF model directory (``model.safetensors`` or an index with its shards)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        index = self.directory / INDEX_FILE
        if index.exists():
            weight_map = _read_weight_map(index)
            files = sorted(set(weight_map.values()))
        elif (self.directory / SINGLE_FILE).exists():
            weight_map, files = None, [SINGLE_FILE]
        else:
            raise SafetensorsError(f"{self.directory}: no {INDEX_FILE} or {SINGLE_FILE}")
        self._stored: dict[str, _Stored] = {}
        for file in files:
            for stored in _read_header(self.directory / file):
                if stored.info.name in self._stored:
                    raise SafetensorsError(f"{stored.path}: tensor {stored.info.name!r} also in "
                                           f"{self._stored[stored.info.name].path.name}")
                self._stored[stored.info.name] = stored
        if weight_map is not None:
            for name, file in weight_map.items():
                stored = self._stored.get(name)
                if stored is None or stored.path.name != file:
                    raise SafetensorsError(f"{index}: tensor {name!r} is mapped to {file}, "
                                           f"which does not hold it")

    def infos(self) -> dict[str, TensorInfo]:
        return {name: stored.info for name, stored in self._stored.items()}

    def read(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """The tensor ``name``, or only its rows ``[start, stop)`` (a contiguous byte range)."""
        stored = self._stored[name]
        info = stored.info
        start, stop = rows if rows is not None else (0, info.shape[0] if info.shape else 1)
        row_bytes = info.nbytes // max(info.shape[0], 1) if info.shape else info.nbytes
        nbytes = (stop - start) * row_bytes
        buffer = torch.empty(nbytes, dtype=torch.uint8)
        with open(stored.path, "rb", buffering=0) as f:
            f.seek(stored.offset + start * row_bytes)
            view = _byte_view(buffer)
            done = 0
            while done < nbytes:
                got = f.readinto(view[done:])
                if not got:
                    raise SafetensorsError(f"{stored.path}: ends inside tensor {name!r}")
                done += got
        shape = info.shape if rows is None else (stop - start, *info.shape[1:])
        return buffer.view(info.dtype).reshape(shape)


def _byte_view(buffer: torch.Tensor) -> memoryview:
    """A writable view of a contiguous uint8 tensor's bytes. Not through numpy, which would pin
    the storage (non-resizable): the checkpoint writer frees written tensors by resizing theirs."""
    return memoryview((ctypes.c_char * buffer.numel()).from_address(buffer.data_ptr())).cast("B")


def _read_weight_map(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SafetensorsError(f"{index}: not a safetensors index ({e!r})") from None
    missing = sorted({f for f in weight_map.values() if not (index.parent / f).exists()})
    if missing:
        raise SafetensorsError(f"{index}: names missing files {', '.join(missing)}")
    return weight_map


def _read_header(path: Path) -> list[_Stored]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise SafetensorsError(f"{path}: truncated ({size} bytes, no header)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(size - 8, MAX_HEADER_BYTES):
            raise SafetensorsError(f"{path}: corrupt or truncated header (claims {header_len} bytes, "
                                   f"file has {size})")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SafetensorsError(f"{path}: corrupt header ({e})") from None
    data_start = 8 + header_len
    stored = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = DTYPES[entry["dtype"]]
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise SafetensorsError(f"{path}: corrupt header entry for {name!r} ({e!r})") from None
        info = TensorInfo(name, dtype, shape)
        if end - begin != info.nbytes:
            raise SafetensorsError(f"{path}: tensor {name!r} has {end - begin} bytes, its dtype and "
                                   f"shape {list(shape)} need {info.nbytes}")
        if data_start + end > size:
            raise SafetensorsError(f"{path}: truncated: tensor {name!r} ends at byte "
                                   f"{data_start + end}, the file has {size}")
        stored.append(_Stored(info, path, data_start + begin))
    return stored


def plan_shards(infos: Iterable[TensorInfo], max_shard_bytes: int) -> list[list[TensorInfo]]:
    """Groups tensors, in order, into files of at most ``max_shard_bytes`` (one tensor may exceed it)."""
    shards: list[list[TensorInfo]] = [[]]
    size = 0
    for info in infos:
        if shards[-1] and size + info.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(info)
        size += info.nbytes
    return shards


def shard_file_name(number: int, count: int) -> str:
    return f"model-{number:05d}-of-{count:05d}.safetensors"


class ShardedWriter:
    """Writes planned shards, one tensor at a time, in plan order; leaving the ``with`` block without
    an error checks that every planned tensor came and writes the index.

    Only one tensor is held at any time; a tensor whose name, dtype or shape differs from the plan
    is an error (it would corrupt the file's header).
    """

    def __init__(self, directory: str | Path, shards: Sequence[Sequence[TensorInfo]]):
        self.directory = Path(directory)
        self._queue = [(number, info) for number, shard in enumerate(shards) for info in shard]
        self._shards = shards
        self._position = 0
        self._file = None
        self._file_number = -1
        self.weight_map = {info.name: shard_file_name(n + 1, len(shards)) for n, info in self._queue}

    def write(self, name: str, tensor: torch.Tensor) -> None:
        number, info = self._queue[self._position]
        if (name, tensor.dtype, tuple(tensor.shape)) != (info.name, info.dtype, info.shape):
            raise ValueError(f"tensor {name} {tensor.dtype} {list(tensor.shape)} does not match the "
                             f"planned {info.name} {info.dtype} {list(info.shape)}")
        if number != self._file_number:
            self._open(number)
        data = tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8)
        self._file.write(memoryview(data.numpy()))
        self._position += 1

    def _open(self, number: int) -> None:
        if self._file is not None:
            self._file.close()
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for info in self._shards[number]:
            header[info.name] = {"dtype": DTYPE_NAMES[info.dtype], "shape": list(info.shape),
                                 "data_offsets": [offset, offset + info.nbytes]}
            offset += info.nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors does
        self._file = open(self.directory / shard_file_name(number + 1, len(self._shards)), "wb")
        self._file.write(struct.pack("<Q", len(encoded)) + encoded)
        self._file_number = number

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if self._file is not None:
            self._file.close()
        if error_type is None:
            self._finish()

    def _finish(self) -> None:
        if self._position != len(self._queue):
            missing = [info.name for _, info in self._queue[self._position:]]
            raise ValueError(f"{len(missing)} planned tensors were never written, e.g. {missing[0]}")
        total = sum(info.nbytes for _, info in self._queue)
        index = {"metadata": {"total_size": total}, "weight_map": self.weight_map}
        (self.directory / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

