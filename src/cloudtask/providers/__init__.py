"""Providers obtain workers and let them go. The registry names them all."""

from __future__ import annotations

from .base import Instance, Provider, ProviderUnavailable
from .local import LocalProvider

# Name -> provider class; None marks a provider that is not built yet.
PROVIDERS: dict[str, type[Provider] | None] = {
    "local": LocalProvider,
    "hub": None,
    "ec2": None,
    "libcloud": None,
}


def get_provider(name: str) -> type[Provider]:
    try:
        provider = PROVIDERS[name]
    except KeyError:
        raise ProviderUnavailable(
            f"--provider: unknown provider {name!r}; valid: {', '.join(sorted(PROVIDERS))}"
        ) from None
    if provider is None:
        raise ProviderUnavailable(
            f"--provider: {name} is not available yet: comes with cloud workers"
        )
    return provider


__all__ = ["PROVIDERS", "Instance", "Provider", "ProviderUnavailable", "get_provider"]
