"""Model + optimizer checkpoints in megatron-core's torch_dist format, loadable at any TP/PP/DP.

Written to `<dir>.tmp` by every rank and renamed into place by rank 0 only once all ranks have
finished, so a crash mid-save never leaves a directory that looks complete.

Two distributed-optimizer bugs of megatron-core (on any device) are handled here:
- the default optimizer sharding cannot reshard without apex/TE ("flattened_range is not
  supported"): we save and load `fully_reshardable`;
- loading needs optimizer state to exist (dummy-initialised first), then fails on the `step` key the
  checkpoint does not hold (skipped here), and finally gives every parameter *one shared* `step`
  tensor, so AdamW counts one step per parameter (step 53 instead of 2, wrong bias correction):
  `step` is cloned per parameter after loading.
"""
import json
import os
import shutil
from typing import Any, Dict, List, Optional, Sequence

import torch

from harness.checkpoint.layout import MARKER
from harness.models.sharding import unwrap
from harness.parallel.patch_sites import Site, check_sites

OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "fully_reshardable", "chained_optim_avoid_prefix": True}

SITES = (
    Site(
        "megatron.core.optimizer.distrib_optimizer",
        "DistributedOptimizer._set_main_param_and_optimizer_states",
        "it raises on optimizer-state keys (AdamW's 'step') that a checkpoint does not hold",
    ),
    Site(
        "megatron.core.optimizer.distrib_optimizer",
        "DistributedOptimizer._init_optimizer_states_with_dummy_values",
        "loading into a fresh optimizer needs its state allocated first",
    ),
)


class CheckpointError(RuntimeError):
    pass


def _model_state(chunks, *, is_loading=False) -> Dict[str, Any]:
    models = [unwrap(chunk) for chunk in chunks]
    if len(models) == 1:
        return {"model": models[0].sharded_state_dict()}
    return {f"model{i}": model.sharded_state_dict() for i, model in enumerate(models)}


def _distributed_optimizers(optimizer) -> List:
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    inner = getattr(optimizer, "chained_optimizers", [optimizer])
    return [o for o in inner if isinstance(o, DistributedOptimizer)]


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _barrier():
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def save_checkpoint(directory: str, chunks, optimizer=None, extra: Optional[Dict[str, Any]] = None) -> None:
    """Save model chunks (and the optimizer) of every rank into `directory`; all ranks call this.

    `extra` (JSON- or torch-serialisable, identical on every rank: iteration, scheduler state,
    dataloader position, ...) is stored once and returned by `load_checkpoint`."""
    from megatron.core import dist_checkpointing

    directory = os.path.abspath(directory)
    staging = directory + ".tmp"
    if _rank() == 0:
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
    _barrier()
    state = _model_state(chunks)
    if optimizer is not None:
        state["optimizer"] = optimizer.sharded_state_dict(state, is_loading=False, metadata=OPTIMIZER_METADATA)
    state["extra"] = extra or {}
    dist_checkpointing.save(state, staging)
    _barrier()
    if _rank() == 0:
        write_marker(staging, has_optimizer=optimizer is not None, chunks=len(chunks))
        if os.path.exists(directory):
            shutil.rmtree(directory)
        os.replace(staging, directory)
    _barrier()


def write_marker(directory: str, has_optimizer: bool, chunks: int = 1) -> None:
    """The file that makes a directory a complete harness checkpoint; written last."""
    with open(os.path.join(directory, MARKER), "w") as f:
        json.dump({"format": "torch_dist", "has_optimizer": has_optimizer, "chunks": chunks}, f)


def load_checkpoint(directory: str, chunks, optimizer=None, exclude_prefixes: Sequence[str] = ()) -> Dict[str, Any]:
    """Load into model chunks of any TP/PP/DP layout (and the optimizer); returns the saved `extra`.
    Model keys starting with one of `exclude_prefixes` keep their current values (a critic built
    from an LM checkpoint keeps its own head)."""
    from megatron.core import dist_checkpointing

    directory = os.path.abspath(directory)
    if not os.path.isfile(os.path.join(directory, MARKER)):
        raise CheckpointError(
            f"{directory}: not a complete harness checkpoint ({MARKER} is missing: the save did not finish, "
            "or the directory is not a checkpoint)"
        )
    with open(os.path.join(directory, MARKER)) as f:
        saved = json.load(f)
    if optimizer is not None and not saved.get("has_optimizer"):
        raise CheckpointError(f"{directory}: holds model weights only; no optimizer state to resume from")
    state = _model_state(chunks, is_loading=True)
    for model_state in state.values():
        for key in [k for k in model_state if k.startswith(tuple(exclude_prefixes))]:
            del model_state[key]
    if optimizer is not None:
        _install_optimizer_fixes()
        for distributed in _distributed_optimizers(optimizer):
            if not distributed.optimizer.state:
                distributed._init_optimizer_states_with_dummy_values()
        state["optimizer"] = optimizer.sharded_state_dict(state, is_loading=True, metadata=OPTIMIZER_METADATA)
    state["extra"] = {}
    loaded = dist_checkpointing.load(state, directory)
    for i, chunk in enumerate(chunks):
        missing, unexpected = unwrap(chunk).load_state_dict(loaded["model" if len(chunks) == 1 else f"model{i}"],
                                                            strict=False)
        missing = [k for k in missing if not k.startswith(tuple(exclude_prefixes))]
        if missing or unexpected:
            raise CheckpointError(f"{directory}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    if optimizer is not None:
        optimizer.load_state_dict(loaded["optimizer"])
        _unshare_step_counters(optimizer)
    return loaded.get("extra", {})


def _unshare_step_counters(optimizer) -> None:
    for inner in getattr(optimizer, "chained_optimizers", [optimizer]):
        for param_state in inner.optimizer.state.values():
            if torch.is_tensor(param_state.get("step")):
                param_state["step"] = param_state["step"].clone()


def _install_optimizer_fixes() -> None:
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    original = DistributedOptimizer._set_main_param_and_optimizer_states
    if getattr(original, "_harness_patched", False):
        return
    check_sites(SITES, patched_by=__name__)

    def set_states_present_in_checkpoint(self, model_param, tensors):
        # State the checkpoint does not hold (AdamW's per-parameter 'step', restored from the param
        # groups instead) keeps its current value rather than raising.
        group_index, group_order = self.model_param_group_index_map[model_param]
        main_param = self.optimizer.param_groups[group_index]["params"][group_order]
        current = self.optimizer.state.get(main_param, {})
        return original(self, model_param, {**current, **tensors})

    set_states_present_in_checkpoint._harness_patched = True
    DistributedOptimizer._set_main_param_and_optimizer_states = set_states_present_in_checkpoint
