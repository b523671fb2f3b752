"""The price file (`profile-prices.yaml`): per core-hour for the VM the measured runs use, per DBU for the
Databricks cluster types that can only be extrapolated. Validated on load: one line naming what is wrong."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_PRICES = Path(__file__).resolve().parents[2] / "profile-prices.yaml"


class PriceFileError(ValueError):
    """The price file is missing, malformed or lacks a price."""


@dataclass(frozen=True)
class VmPrice:
    name: str
    price_per_core_hour: float
    source: str

    def run_cost(self, cores: int, wall_s: float) -> float:
        # A run holds its cores for its wall time, busy or not: that is what a VM bills.
        return cores * wall_s / 3600 * self.price_per_core_hour


@dataclass(frozen=True)
class ClusterType:
    name: str
    description: str
    cores: int
    dbu_per_hour: float
    price_per_dbu: float
    vm_price_per_hour: float
    source: str

    @property
    def price_per_hour(self) -> float:
        return self.dbu_per_hour * self.price_per_dbu + self.vm_price_per_hour

    def run_cost(self, wall_s: float) -> float:
        return wall_s / 3600 * self.price_per_hour


@dataclass(frozen=True)
class Prices:
    currency: str
    vm: VmPrice
    clusters: tuple[ClusterType, ...]
    path: str

    def as_dict(self) -> dict[str, Any]:
        return {"currency": self.currency, "path": self.path, "vm": vars(self.vm),
                "databricks": [dict(vars(c), price_per_hour=c.price_per_hour) for c in self.clusters]}


def _number(where: str, d: dict, key: str, positive: bool = True) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (positive and v == 0):
        raise PriceFileError(f"{where}: {key} must be a {'positive' if positive else 'non-negative'} number, "
                             f"got {v!r}")
    return float(v)


def load_prices(path: str | Path | None = None) -> Prices:
    p = Path(path) if path else REPO_PRICES
    if not p.is_file():
        raise PriceFileError(f"price file {p} does not exist (copy profile-prices.yaml from the repository)")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise PriceFileError(f"price file {p} is not YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("vm"), dict):
        raise PriceFileError(f"price file {p}: needs a `vm:` mapping with price_per_core_hour")
    vm = raw["vm"]
    prices_vm = VmPrice(str(vm.get("name", "VM")), _number(f"{p} vm", vm, "price_per_core_hour"),
                        str(vm.get("source", "")))
    clusters = []
    for i, c in enumerate(raw.get("databricks") or []):
        where = f"{p} databricks[{i}]"
        if not isinstance(c, dict) or not c.get("name"):
            raise PriceFileError(f"{where}: each cluster type needs a name")
        cores = c.get("cores")
        if not isinstance(cores, int) or isinstance(cores, bool) or cores < 1:
            raise PriceFileError(f"{where} ({c['name']}): cores must be a positive integer, got {cores!r}")
        clusters.append(ClusterType(str(c["name"]), str(c.get("description", "")), cores,
                                    _number(where, c, "dbu_per_hour"), _number(where, c, "price_per_dbu"),
                                    _number(where, c, "vm_price_per_hour", positive=False), str(c.get("source", ""))))
    return Prices(str(raw.get("currency", "USD")), prices_vm, tuple(clusters), str(p))
