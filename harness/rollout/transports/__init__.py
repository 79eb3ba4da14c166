"""Weight transports by name (``actor_rollout_ref.rollout.weight_transport``)."""
from harness.rollout.transports import disk, distributed, tensor  # noqa: F401  (they register)
from harness.rollout.transports.base import TRANSPORTS, WeightTransport, make_transport, register_transport

__all__ = ["TRANSPORTS", "WeightTransport", "make_transport", "register_transport"]
