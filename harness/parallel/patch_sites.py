"""The megatron-core / torch internals the harness patches, and the canary that checks they still exist.

An upgrade that moves or removes a patched site must fail loudly, naming it, rather than leave a
patch silently unapplied.
"""
import importlib
from dataclasses import dataclass
from typing import Iterable


class CompatSiteMissing(RuntimeError):
    """megatron-core or torch no longer has a site the harness patches."""


@dataclass(frozen=True)
class Site:
    module: str
    attribute: str  # dotted path within the module
    why: str


def check_sites(sites: Iterable[Site], patched_by: str) -> None:
    for site in sites:
        try:
            obj = importlib.import_module(site.module)
            for part in site.attribute.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as e:
            raise CompatSiteMissing(
                f"{site.module}.{site.attribute} is gone ({e}); {patched_by} patches it because "
                f"{site.why}. Update {patched_by} for this megatron-core / torch version."
            ) from e
