"""``update_weights_from_tensor``: only handles travel (CUDA IPC on GPU, shared-memory files on CPU).

Each bucket is copied into one flat storage, and the tensors are sent as views into it, so a bucket
is one IPC handle (one shared-memory file on CPU), not one per tensor. The flat buffer stays alive
until every server has answered, because the servers read it in place.
"""
from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.reduction import ForkingPickler
from typing import List

import torch
import torch.multiprocessing

from harness.rollout.base import NamedTensor
from harness.rollout.transports.base import WeightTransport, register_transport

ALIGN_BYTES = 64  # every view starts aligned for any dtype (and for vectorised copies)


def flatten_bucket(bucket: List[NamedTensor]):
    """(flat uint8 buffer, [(name, view into it)]) with each tensor's values copied in."""
    offsets, total = [], 0
    for _, tensor in bucket:
        offsets.append(total)
        total += -(-tensor.numel() * tensor.element_size() // ALIGN_BYTES) * ALIGN_BYTES
    flat = torch.empty(total, dtype=torch.uint8, device=bucket[0][1].device)
    views = []
    for (name, tensor), offset in zip(bucket, offsets):
        nbytes = tensor.numel() * tensor.element_size()
        view = flat[offset:offset + nbytes].view(tensor.dtype).view(tensor.shape)
        view.copy_(tensor)
        views.append((name, view))
    return flat, views


def serialize(named_tensors: List[NamedTensor]) -> str:
    """What SGLang's ``MultiprocessingSerializer.deserialize`` reads (torch's reductions, base64)."""
    buffer = io.BytesIO()
    ForkingPickler(buffer).dump(named_tensors)
    return base64.b64encode(buffer.getvalue()).decode()


@register_transport("tensor")
class TensorTransport(WeightTransport):
    def __init__(self, config):
        super().__init__(config)
        # CPU tensors must travel as named shared-memory files: with the default (file descriptors)
        # SGLang's scheduler fails the authentication of the fd-passing connection and exits.
        torch.multiprocessing.set_sharing_strategy("file_system")

    def send(self, bucket, version):
        flat, views = flatten_bucket(bucket)
        bucket.clear()  # the flat copy is what travels: keep one copy of the bucket in memory
        payload = serialize(views)
        with ThreadPoolExecutor(len(self.servers)) as pool:
            answers = [pool.submit(server.ok, "/update_weights_from_tensor",
                                   {"serialized_named_tensors": [payload] * tp, "load_format": None,
                                    "flush_cache": False, "weight_version": version},
                                   self.config.update_timeout_s)
                       for server, tp in zip(self.servers, self.tp_sizes)]
            for answer in answers:
                answer.result()
        del flat  # only now: the servers have copied out of it
