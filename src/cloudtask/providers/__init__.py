"""Providers obtain workers and let them go. The registry names them all.

`local` runs jobs on this machine. The clouds (hub, ec2, libcloud, and any a
third party adds through the `cloudtask.providers` entry point group, naming
a `Cloud` subclass) are imported only when used: their SDKs are slow to load.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from .base import Instance, Provider, ProviderUnavailable
from .cloud import Cloud
from .local import LocalProvider

LOCAL = "local"
BUILTIN_CLOUDS = {
    "hub": "cloudtask.providers.hub:HubCloud",
    "ec2": "cloudtask.providers.ec2:EC2Cloud",
    "libcloud": "cloudtask.providers.libcloud:LibcloudCloud",
}
ENTRY_POINT_GROUP = "cloudtask.providers"


def _plugins() -> dict[str, str]:
    return {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}


def provider_names() -> list[str]:
    return sorted({LOCAL, *BUILTIN_CLOUDS, *_plugins()})


def is_cloud(name: str) -> bool:
    return name != LOCAL


def get_cloud(name: str) -> type[Cloud]:
    """The Cloud class of a provider name; a one-line UsageError when there is none."""
    where = {**_plugins(), **BUILTIN_CLOUDS}.get(name)
    if where is None:
        raise ProviderUnavailable(
            f"--provider: unknown provider {name!r}; valid: {', '.join(provider_names())}"
        )
    module_name, _, class_name = where.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ProviderUnavailable(f"--provider={name}: cannot load {where}: {exc}") from None
    if not (isinstance(found, type) and issubclass(found, Cloud)):
        raise ProviderUnavailable(f"--provider={name}: {where} is not a cloudtask Cloud")
    return found


__all__ = [
    "Cloud",
    "Instance",
    "LocalProvider",
    "Provider",
    "ProviderUnavailable",
    "get_cloud",
    "is_cloud",
    "provider_names",
]
