"""Lazy safetensors reading and streamed sharded writing, checked against the safetensors library."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.models.safetensors_io import (INDEX_FILE, SafetensorsError, SafetensorsReader,
                                           ShardedWriter, TensorInfo, plan_shards)

TENSORS = {
    "a": torch.randn(3, 5),
    "b": torch.randn(7).to(torch.bfloat16),
    "c": torch.arange(6, dtype=torch.int64).reshape(2, 3),
    "d": torch.randn(2, 2).to(torch.float16),
}


def write_with_our_writer(directory, tensors, max_shard_bytes):
    infos = [TensorInfo(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()]
    with ShardedWriter(directory, plan_shards(infos, max_shard_bytes)) as writer:
        for name, tensor in tensors.items():
            writer.write(name, tensor)


def test_written_shards_load_with_the_safetensors_library(tmp_path):
    write_with_our_writer(tmp_path, TENSORS, max_shard_bytes=40)
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and files[0] == "model-00001-of-%05d.safetensors" % len(files)
    loaded = {}
    for file in files:
        loaded.update(load_file(tmp_path / file))
    assert loaded.keys() == TENSORS.keys()
    assert all(torch.equal(loaded[k], TENSORS[k]) and loaded[k].dtype == TENSORS[k].dtype
               for k in TENSORS)
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in TENSORS.values())


def test_reader_reads_what_the_library_wrote(tmp_path):
    save_file(TENSORS, tmp_path / "model.safetensors")
    reader = SafetensorsReader(tmp_path)
    assert reader.infos()["c"] == TensorInfo("c", torch.int64, (2, 3))
    assert all(torch.equal(reader.read(k), TENSORS[k]) for k in TENSORS)


def test_writer_refuses_a_tensor_out_of_plan(tmp_path):
    infos = [TensorInfo("a", torch.float32, (3, 5))]
    with pytest.raises(ValueError, match="does not match the planned a"):
        with ShardedWriter(tmp_path, plan_shards(infos, 1 << 20)) as writer:
            writer.write("a", torch.zeros(5, 3))
    with pytest.raises(ValueError, match="never written"):
        with ShardedWriter(tmp_path, plan_shards(infos, 1 << 20)):
            pass


def test_truncated_file_is_named(tmp_path):
    save_file(TENSORS, tmp_path / "model.safetensors")
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-3])
    with pytest.raises(SafetensorsError, match=r"model.safetensors: truncated: tensor '\w' ends"):
        SafetensorsReader(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(data[:20])
    with pytest.raises(SafetensorsError, match="model.safetensors: corrupt or truncated header"):
        SafetensorsReader(tmp_path)


def test_corrupt_header_is_named(tmp_path):
    save_file(TENSORS, tmp_path / "model.safetensors")
    data = bytearray((tmp_path / "model.safetensors").read_bytes())
    data[8:12] = b"#!?~"
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(SafetensorsError, match="model.safetensors: corrupt header"):
        SafetensorsReader(tmp_path)


def test_index_naming_a_missing_file_is_an_error(tmp_path):
    write_with_our_writer(tmp_path, TENSORS, max_shard_bytes=40)
    second = sorted(tmp_path.glob("model-00002-of-*.safetensors"))[0]
    second.unlink()
    with pytest.raises(SafetensorsError, match=f"names missing files {second.name}"):
        SafetensorsReader(tmp_path)
    with pytest.raises(SafetensorsError, match="no model.safetensors.index.json or model.safetensors"):
        SafetensorsReader(tmp_path / "nowhere")
