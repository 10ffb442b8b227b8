"""The training configuration of a model version: method, base model, LoRA and optimizer settings.

Everything that influences the trained weights is here, so `sha256()` identifies the recipe
and a replay can rerun it. `precision` and `threads` are stored resolved (never "auto").

Method-specific settings (APA's partition and merge, S3T's layer groups and orders) are part
of the dict and the digest only where they apply (`_APPLIES`), so the digest of a config that
does not use them is the same as before they existed; elsewhere they must keep their defaults.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, fields
from fractions import Fraction

from ledger.errors import BadInput

METHODS = ("retrain", "sisa", "apa", "s3t")
PARTITIONS = ("subject", "public-centroid")
MERGES = ("d", "nd")
ORDER_SELECTIONS = ("cyclic", "bms")
PRECISIONS = ("fp32", "bf16")
_TOP = re.compile(r"top-[1-9][0-9]*")


@dataclass(frozen=True)
class TrainConfig:
    method: str = "retrain"
    base: str = "smollm2-135m"
    shards: int = 1
    slices: int = 1
    epochs: float = 1.0
    seed: int = 0
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    lora_layers: str = "all"  # or "top-N": LoRA on the top N layers, the frozen prefix's states cached
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    batch_size: int = 4
    max_length: int = 1024
    precision: str = "fp32"
    threads: int = 2
    # APA: shard partition, merge level, aggregation temperature and neighbourhood size.
    partition: str = "subject"
    catalogue: str = "movielens-100k"  # public item text for public-centroid: packaged MovieLens or a file
    merge: str = "nd"
    tau: float = 1000.0
    neighbours: int = 20
    # S3T: layers per LoRA layer group, slice orders per shard and how they are chosen.
    layers_per_group: int = 1
    budget: int = 1
    order_selection: str = "cyclic"
    deletion_prior: tuple[float, ...] = ()  # bms: deletion probability of each slice

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BadInput(f"unknown method {self.method!r} (one of {', '.join(METHODS)})")
        if self.precision not in PRECISIONS:
            raise BadInput(f"unknown precision {self.precision!r} (one of {', '.join(PRECISIONS)})")
        if self.method == "retrain" and (self.shards, self.slices) != (1, 1):
            raise BadInput("method retrain trains one adapter: --shards and --slices must be 1")
        positive = {"shards": self.shards, "slices": self.slices, "epochs": self.epochs, "lora_r": self.lora_r,
                    "batch_size": self.batch_size, "max_length": self.max_length, "threads": self.threads,
                    "lr": self.lr}
        for name, value in positive.items():
            if not value > 0:
                raise BadInput(f"{name} must be positive, got {value}")
        if not 0 <= self.lora_dropout < 1 or self.warmup_steps < 0 or self.weight_decay < 0:
            raise BadInput("lora_dropout must be in [0, 1); warmup_steps and weight_decay must be >= 0")
        if not self.target_modules:
            raise BadInput("target_modules must name at least one module")
        if self.lora_layers != "all" and not _TOP.fullmatch(self.lora_layers):
            raise BadInput(f"lora-layers must be 'all' or 'top-N' with N >= 1, got {self.lora_layers!r}")
        self._check_method_fields()

    def _check_method_fields(self) -> None:
        defaults = TrainConfig.__dataclass_fields__
        for name, (applies, where) in _APPLIES.items():
            if not applies(self) and getattr(self, name) != defaults[name].default:
                raise BadInput(f"{name.replace('_', '-')} applies only to {where}")
        choices = {"partition": PARTITIONS, "merge": MERGES, "order_selection": ORDER_SELECTIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise BadInput(f"unknown {name.replace('_', ' ')} {getattr(self, name)!r} (one of {', '.join(allowed)})")
        if self.method == "apa" and self.slices != 1:
            raise BadInput("method apa trains one adapter per shard: --slices must be 1")
        if self.tau < 0 or self.neighbours < 1:
            raise BadInput("tau must be >= 0 and neighbours >= 1")
        if self.layers_per_group < 1 or self.budget < 1:
            raise BadInput("layers-per-group and budget must be positive")
        if self.method == "s3t" and self.budget > math.factorial(self.slices):
            raise BadInput(f"budget {self.budget} exceeds the {math.factorial(self.slices)} orders of {self.slices} slices")
        if self.order_selection == "bms":
            prior = self.deletion_prior
            if len(prior) != self.slices or any(p < 0 for p in prior) or not math.isclose(sum(prior), 1.0):
                raise BadInput(f"deletion-prior must give {self.slices} non-negative probabilities summing to 1")
            if self.budget > self.slices:
                raise BadInput("bipartite-matching selection gives at most one order per slice: budget <= slices")

    def top_layers(self, num_layers: int) -> int:
        """How many of the base model's `num_layers` layers (the top ones) carry LoRA."""
        if self.lora_layers == "all":
            return num_layers
        n = int(self.lora_layers.removeprefix("top-"))
        if n > num_layers:
            raise BadInput(f"lora-layers {self.lora_layers}: the base model has only {num_layers} layers")
        return n

    @property
    def epochs_fraction(self) -> Fraction:
        return Fraction(str(self.epochs))

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in _APPLIES or _APPLIES[k][0](self)}
        if self.lora_layers == "all":  # the digest of an all-layers config is the one it had before the field
            del out["lora_layers"]
        out["target_modules"] = list(self.target_modules)
        if "deletion_prior" in out:
            out["deletion_prior"] = list(self.deletion_prior)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["target_modules"] = tuple(values.get("target_modules", cls.target_modules))
        values["deletion_prior"] = tuple(values.get("deletion_prior", ()))
        return cls(**values)

    def sha256(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _is_apa(config: TrainConfig) -> bool:
    return config.method == "apa"


def _is_s3t(config: TrainConfig) -> bool:
    return config.method == "s3t"


# Method-specific fields: when each one applies (and, for the error message, where).
_APPLIES = {
    "partition": (_is_apa, "--method apa"),
    "merge": (_is_apa, "--method apa"),
    "tau": (_is_apa, "--method apa"),
    "neighbours": (_is_apa, "--method apa"),
    "catalogue": (lambda c: _is_apa(c) and c.partition == "public-centroid", "--partition public-centroid"),
    "layers_per_group": (_is_s3t, "--method s3t"),
    "budget": (_is_s3t, "--method s3t"),
    "order_selection": (_is_s3t, "--method s3t"),
    "deletion_prior": (lambda c: _is_s3t(c) and c.order_selection == "bms", "--order-selection bms"),
}
