"""The training configuration of a model version: method, base model, LoRA and optimizer settings.

Everything that influences the trained weights is here, so `sha256()` identifies the recipe
and a replay can rerun it. `precision` and `threads` are stored resolved (never "auto").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from fractions import Fraction

from ledger.errors import BadInput

METHODS = ("retrain", "sisa")
PRECISIONS = ("fp32", "bf16")


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
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    batch_size: int = 4
    max_length: int = 1024
    precision: str = "fp32"
    threads: int = 2

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

    @property
    def epochs_fraction(self) -> Fraction:
        return Fraction(str(self.epochs))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["target_modules"] = list(self.target_modules)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["target_modules"] = tuple(values.get("target_modules", cls.target_modules))
        return cls(**values)

    def sha256(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
