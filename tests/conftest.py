import pytest

from tests.support.multirank import RankGroup


@pytest.fixture(scope="module")
def rank_group():
    """Two gloo ranks, started once per test module (torch + megatron start-up is seconds per rank)."""
    group = RankGroup(world_size=2)
    yield group
    group.close()
