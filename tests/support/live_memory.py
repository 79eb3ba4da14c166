"""Peak of live tensor memory, measured as the sum of the unique storages alive at each moment.

    with LiveTensorMemory() as memory:      # counts every tensor already alive (weights, optimizer)
        forward_backward()
        memory.mark("forward_backward")     # peak since the last mark, then the peak restarts
        optimizer_step()
        memory.mark("optimizer")

A `TorchDispatchMode` sees every operator's outputs; each new storage is counted once (views share
it) and released by a weak-reference finalizer when the storage itself dies. Workspace an operator
allocates and frees inside its kernel (and buffers of communication backends) is not tensor memory
and is not counted; neither is anything the process holds outside tensors (RSS is not used).
"""
import gc
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LiveTensorMemory(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self._bytes = {}  # id(storage) -> bytes counted for it
        self.current = 0
        self.peak = 0
        self.phases = {}

    def __enter__(self):
        gc.collect()
        for obj in gc.get_objects():
            if isinstance(obj, torch.Tensor):
                self._track(obj)
        self.peak = self.current
        return super().__enter__()

    def _track(self, tensor) -> None:
        if tensor.device.type == "meta" or tensor.is_sparse:
            return
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # tensors without a plain storage
            return
        key, size = id(storage), storage.nbytes()
        known = self._bytes.get(key)
        if known is None:
            weakref.finalize(storage, self._release, key)
        elif known == size:
            return
        self._bytes[key] = size
        self.current += size - (known or 0)
        self.peak = max(self.peak, self.current)

    def _release(self, key) -> None:
        self.current -= self._bytes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # Outputs, and inputs an in-place resize may have grown.
        for value in tree_leaves((out, args, kwargs)):
            if isinstance(value, torch.Tensor):
                self._track(value)
        return out

    def mark(self, phase: str) -> int:
        """The peak since the previous mark (or the start), recorded under `phase`."""
        self.phases[phase] = self.peak
        self.peak = self.current
        return self.phases[phase]


class CudaMemory:
    """The same interface on CUDA: torch's allocator statistics (tensors only, like the CPU count)."""

    def __init__(self):
        self.phases = {}

    def __enter__(self):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc):
        return False

    @property
    def current(self) -> int:
        import torch

        return torch.cuda.memory_allocated()

    def mark(self, phase: str) -> int:
        import torch

        torch.cuda.synchronize()
        self.phases[phase] = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        return self.phases[phase]
