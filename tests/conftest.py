import pytest

from tests.support.multirank import RankGroup
from tests.support.slurm_cluster import slurm_cluster  # noqa: F401  (the session's two-node Slurm cluster)


@pytest.fixture(scope="module")
def rank_group():
    """Two gloo ranks, started once per test module (torch + megatron start-up is seconds per rank)."""
    group = RankGroup(world_size=2)
    yield group
    group.close()
