"""Canaries: every megatron-core / torch site the harness patches still exists, and the CPU layer
does what megatron-core needs from it. A site moved by an upgrade fails here, by name."""
import pytest

from harness.checkpoint import torch_dist
from harness.parallel import cpu_compat
from harness.parallel.patch_sites import CompatSiteMissing, Site, check_sites


@pytest.mark.parametrize(
    "site", cpu_compat.SITES + torch_dist.SITES, ids=lambda s: f"{s.module}.{s.attribute}"
)
def test_patched_site_exists(site):
    check_sites([site], patched_by="test")


def test_missing_site_is_named():
    gone = Site("megatron.core.tensor_parallel.random", "_renamed_rng_getter", "seeding reads the CUDA RNG")
    with pytest.raises(CompatSiteMissing, match=r"megatron\.core\.tensor_parallel\.random\._renamed_rng_getter.*seeding"):
        check_sites([gone], patched_by="harness.parallel.cpu_compat")


def test_cpu_layer_behaviour(rank_group):
    (rank0, rank1) = rank_group.run("tests.parallel.rank_checks:cpu_layer_behaviour", timeout=120)
    for result in (rank0, rank1):
        assert result["installed"]
        assert result["cuda_allocation_device"] == "cpu"
        assert result["cuda_call_is_noop"]
        assert result["reported_type"] == "torch.cuda.FloatTensor"
        # The model-parallel RNG tracker forks: dropout inside it differs from outside, and is
        # reproducible from the seed.
        assert result["tracker_differs_from_default"]
        assert result["tracker_reproducible"]
        assert result["backward_in_mode_ok"]
    # TP ranks get different dropout streams (megatron seeds them apart).
    assert rank0["tp_dropout_mask"] != rank1["tp_dropout_mask"]
