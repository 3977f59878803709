"""Providers obtain workers and let them go. The registry names them all.

`local` runs jobs on this machine. The clouds (hub, ec2, libcloud, and any a
third party adds through the `cloudtask.providers` entry point group, naming
a `Cloud` subclass) are imported only when used: their SDKs are slow to load.
"""

from __future__ import annotations

from .base import Instance, Provider, ProviderUnavailable
from .cloud import Cloud
from .local import LocalProvider
from .registry import get_cloud, is_cloud, provider_names

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
