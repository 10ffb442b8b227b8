"""Training state of a component: LoRA weights, optimizer, scheduler, RNG and step count.

Resuming from a saved state continues bit for bit as if training had never stopped. On disk
(no pickle): `adapter_model.safetensors` (peft's adapter format), `training_state.safetensors`
(every other tensor) and `training_state.json` (the structure around those tensors).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from unlearning.versions.layout import ADAPTER_FILE, STATE_JSON, STATE_TENSORS


@dataclass
class TrainingState:
    lora: dict[str, torch.Tensor]  # peft adapter state dict (names without the adapter name)
    optimizer: dict | None  # torch optimizer state_dict; None before the first step
    scheduler: dict | None  # torch LR scheduler state_dict; None before the first step
    rng: dict[str, torch.Tensor]  # torch generator states: "cpu" and, with CUDA, "cuda"
    step: int  # optimizer steps taken since initialisation

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.lora.items()}, directory / ADAPTER_FILE, metadata={"format": "pt"})
        tensors: dict[str, torch.Tensor] = {}
        structure = _encode({"optimizer": self.optimizer, "scheduler": self.scheduler, "rng": self.rng,
                             "step": self.step}, tensors, "")
        save_file(tensors, directory / STATE_TENSORS)
        (directory / STATE_JSON).write_text(json.dumps(structure, sort_keys=True, indent=1) + "\n")

    @classmethod
    def load(cls, directory: Path) -> "TrainingState":
        tensors = load_file(directory / STATE_TENSORS)
        rest = _decode(json.loads((directory / STATE_JSON).read_text()), tensors)
        return cls(lora=load_adapter(directory), **rest)


def load_adapter(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / ADAPTER_FILE)


# Nested dicts (int or str keys), lists, tuples, scalars and tensors <-> JSON + a flat tensor dict.

def _encode(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {"tensor": path}
    if isinstance(value, dict):
        return {"dict": [[k, _encode(v, tensors, f"{path}/{k}")] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} at {path or '/'} in a training state")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if isinstance(value, dict):
        (kind, inner), = value.items()
        if kind == "tensor":
            return tensors[inner]
        if kind == "tuple":
            return tuple(_decode(v, tensors) for v in inner)
        return {k: _decode(v, tensors) for k, v in inner}
    return value
