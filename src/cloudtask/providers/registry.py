"""The provider names: `local` and the clouds, built in or added through the
`cloudtask.providers` entry point group. A leaf: config checks --provider
with it, and a cloud's module is imported only when the cloud is used (their
SDKs are slow to load)."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from .base import ProviderUnavailable

if TYPE_CHECKING:
    from .cloud import Cloud

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
    from .cloud import Cloud

    if not (isinstance(found, type) and issubclass(found, Cloud)):
        raise ProviderUnavailable(f"--provider={name}: {where} is not a cloudtask Cloud")
    return found
