"""Lets megatron-core run on a CPU-only torch build with gloo.

The only module in the harness that knows CPU from GPU. `install()` is idempotent and does nothing when
CUDA is available. Every megatron-core site it relies on is listed in `SITES`; `check_sites()` names
the one an upgrade moved or removed (the canary tests call it, and so does `install()`).
"""
import threading
import warnings

import torch
from torch.overrides import TorchFunctionMode

from harness.parallel.patch_sites import Site, check_sites

_lock = threading.Lock()
_installed = False


SITES = (
    Site("megatron.core.tensor_parallel.random", "_get_cuda_rng_state", "seeding reads the CUDA RNG"),
    Site("megatron.core.tensor_parallel.random", "_set_cuda_rng_state", "seeding writes the CUDA RNG (a no-op on CPU builds)"),
    Site("megatron.core.tensor_parallel.random", "CudaRNGStatesTracker.fork", "dropout RNG tracker"),
    Site("megatron.core.transformer.torch_norm", "WrappedTorchNorm.__new__", "torch norms refuse sequence parallel"),
    Site("megatron.core.distributed.finalize_model_grads", "finalize_model_grads", "sums sequence-parallel norm grads over TP"),
    Site("megatron.core.distributed.param_and_grad_buffer", "torch", "grad sync asks for the current CUDA stream"),
    Site("torch.autograd", "Variable._execution_engine.run_backward", "backward must run inside the device mode"),
    Site("torch.cuda", "current_stream", "stubbed: no streams on CPU"),
    Site("torch.cuda", "current_device", "answers 'cpu' so tensors allocated 'on the current device' land on CPU"),
)


def needed() -> bool:
    return not torch.cuda.is_available()


def install() -> None:
    """Patch torch.cuda and megatron-core for CPU. Call before building models or process groups."""
    global _installed
    if not needed():
        return
    with _lock:
        if _installed:
            return
        # megatron-core announces each apex/TE fallback at import; on CPU they are the expected path.
        warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).* not installed.*")
        check_sites(SITES, patched_by=__name__)
        _patch_cuda_runtime()
        _patch_rng()
        _patch_torch_norm()
        _CpuDeviceMode().__enter__()  # stays pushed for the life of the process
        _installed = True


def installed() -> bool:
    return _installed


class _NoStream:
    """Stands in for a CUDA stream: work on CPU is already ordered."""

    def wait_stream(self, *_):
        pass

    def synchronize(self):
        pass

    def record_event(self, *_):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *_):
        return False


def _patch_cuda_runtime():
    cuda = torch.cuda
    # A string, not an int: some callers run inside autograd.Function.backward, outside any mode.
    cuda.current_device = lambda: "cpu"
    cuda.current_stream = lambda *_, **__: _NoStream()
    cuda.default_stream = lambda *_, **__: _NoStream()
    cuda.stream = lambda *_, **__: _NoStream()
    cuda.synchronize = lambda *_, **__: None
    cuda.empty_cache = lambda: None
    cuda.set_device = lambda *_: None


def _patch_rng():
    from megatron.core.tensor_parallel import random as mcore_random

    # On a CPU build the CUDA generator does not exist and setting its state is silently dropped,
    # so dropout under the model-parallel RNG tracker would never fork. Use the CPU generator.
    torch.cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    torch.cuda.set_rng_state = lambda new_state, device="cuda": torch.set_rng_state(new_state)
    # torch.manual_seed would recurse into torch.cuda.manual_seed_all; seed the generator directly.
    torch.cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))
    torch.cuda.manual_seed_all = torch.cuda.manual_seed
    mcore_random._get_cuda_rng_state = lambda *_, clone=False, **__: torch.get_rng_state()
    mcore_random._set_cuda_rng_state = lambda new_state, *_, **__: torch.set_rng_state(new_state)
    warnings.filterwarnings("ignore", message=".*CPU RNG state changed.*")


class _SequenceParallelOff:
    """A read-only view of a TransformerConfig that reports sequence_parallel=False."""

    def __init__(self, config):
        self._config = config

    def __getattr__(self, name):
        return False if name == "sequence_parallel" else getattr(self._config, name)


def _patch_torch_norm():
    from megatron.core.transformer import torch_norm

    original_new = torch_norm.WrappedTorchNorm.__new__
    if getattr(original_new, "_harness_patched", False):
        return

    def new(cls, config, hidden_size, *args, **kwargs):
        norm = original_new(cls, _SequenceParallelOff(config), hidden_size, *args, **kwargs)
        if config.sequence_parallel:
            # What Transformer Engine / apex norms do: finalize_model_grads then sums these over TP,
            # since each TP rank saw only its slice of the sequence.
            for param in norm.parameters():
                param.sequence_parallel = True
        return norm

    new._harness_patched = True
    torch_norm.WrappedTorchNorm.__new__ = new


def _to_cpu(device):
    if isinstance(device, torch.device):
        return torch.device("cpu") if device.type == "cuda" else device
    if isinstance(device, str) and device.startswith("cuda"):
        return "cpu"
    if isinstance(device, int) and not isinstance(device, bool):
        return "cpu"  # a CUDA ordinal
    return device


_BACKWARD_FUNCS = (torch.autograd.backward, torch.Tensor.backward)
_MOVE_FUNCS = (torch.Tensor.to, torch.Tensor.cuda)


class _CpuDeviceMode(TorchFunctionMode):
    """Rewrites CUDA device arguments to CPU, makes `.cuda()` a no-op and reports CUDA tensor types.

    megatron-core allocates with `device="cuda"` / `torch.cuda.current_device()` in many places and
    compares `tensor.type()` with 'torch.cuda.FloatTensor' in the optimizer and grad clipping.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            return args[0]
        if func in _BACKWARD_FUNCS:
            # A mode is switched off while its handler runs, and torch routes backward through this
            # handler: run the engine ourselves with a fresh mode pushed, so recompute inside
            # backward still sees CPU devices.
            with _CpuDeviceMode():
                return _run_backward(func, args, kwargs)
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            return name.replace("torch.", "torch.cuda.", 1) if not name.startswith("torch.cuda.") else name
        if "device" in kwargs:
            kwargs = {**kwargs, "device": _to_cpu(kwargs["device"])}
        if func in _MOVE_FUNCS:
            args = tuple(_to_cpu(a) for a in args)
        return func(*args, **kwargs)


def _run_backward(func, args, kwargs):
    if func is torch.Tensor.backward:
        names = ("self", "gradient", "retain_graph", "create_graph", "inputs")
        bound = dict(zip(names, args), **kwargs)
        tensors, grads = bound["self"], bound.get("gradient")
    else:
        names = ("tensors", "grad_tensors", "retain_graph", "create_graph", "grad_variables", "inputs")
        bound = dict(zip(names, args), **kwargs)
        tensors, grads = bound["tensors"], bound.get("grad_tensors")
    tensors = (tensors,) if isinstance(tensors, torch.Tensor) else tuple(tensors)
    if grads is None or isinstance(grads, torch.Tensor):
        grads = (grads,) * len(tensors) if grads is None else (grads,)
    if any(g is None and t.numel() != 1 for t, g in zip(tensors, grads)):
        raise RuntimeError("grad can be implicitly created only for scalar outputs")
    grads = tuple(torch.ones_like(t) if g is None else g for t, g in zip(tensors, grads))
    create_graph = bool(bound.get("create_graph") or False)
    retain_graph = bound.get("retain_graph")
    retain_graph = create_graph if retain_graph is None else retain_graph
    inputs = bound.get("inputs")
    inputs = () if inputs is None else ((inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs))
    torch.autograd.Variable._execution_engine.run_backward(
        tensors, grads, retain_graph, create_graph, inputs, allow_unreachable=True, accumulate_grad=True
    )
