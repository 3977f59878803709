"""Hourly prices of launched workers, for the report's cost and efficiency.

A shipped table of on-demand Linux prices in US dollars (AWS us-east-1, as
published in 2026; the Hub launches on EC2, so it shares them). Prices change
and differ by region: `--hourly-price` overrides the table, and a size the
table does not know has no price (the report then gives no cost).
"""

from __future__ import annotations

EC2_ON_DEMAND = {
    "t3.nano": 0.0052,
    "t3.micro": 0.0104,
    "t3.small": 0.0208,
    "t3.medium": 0.0416,
    "t3.large": 0.0832,
    "t3.xlarge": 0.1664,
    "t3.2xlarge": 0.3328,
    "m5.large": 0.096,
    "m5.xlarge": 0.192,
    "m5.2xlarge": 0.384,
    "m6i.large": 0.096,
    "m6i.xlarge": 0.192,
    "m7i.large": 0.1008,
    "c5.large": 0.085,
    "c5.xlarge": 0.17,
    "c5.2xlarge": 0.34,
    "c6i.large": 0.085,
    "c6i.xlarge": 0.17,
    "c7i.large": 0.0893,
    "r5.large": 0.126,
    "r6i.large": 0.126,
}

TABLES: dict[str, dict[str, float]] = {"ec2": EC2_ON_DEMAND, "hub": EC2_ON_DEMAND}


def hourly_price(provider: str, size: str, override: float | None = None) -> float | None:
    """The price of one worker-hour: the override, else the table's, else unknown."""
    if override is not None:
        return override
    return TABLES.get(provider, {}).get(size)
