"""LoRA layer groups (S3T's stages): which parameters a stage trains, and deactivation.

Group t holds the `per_group` transformer layers `N-1-(t*per_group + i)` (top-down, as in
the S3T code). Stage t trains only group t's LoRA parameters; every other parameter, LoRA
or not (the LM head included), is frozen, so each parameter is trained at exactly one stage.
That is what makes deactivation exact: restoring every LoRA parameter outside groups
0..p-1 to its initial value gives, bit for bit, the stage p-1 checkpoint. A parameter
trained at several stages (a trainable head, a shared module) would break it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ledger.errors import BadInput
from unlearning.training.engine import Engine

_LAYER = re.compile(r"\.layers\.(\d+)\.")


def layer_of(name: str) -> int:
    match = _LAYER.search(name)
    if match is None:
        raise BadInput(f"s3t: LoRA parameter {name} is not inside a numbered transformer layer")
    return int(match.group(1))


def group_layers(num_layers: int, group: int, per_group: int) -> set[int]:
    return {num_layers - 1 - (group * per_group + i) for i in range(per_group)}


def check_groups(num_layers: int, slices: int, per_group: int) -> None:
    """The groups must fit in the layers that carry LoRA (all, or the top N)."""
    if slices * per_group > num_layers:
        raise BadInput(f"s3t: {slices} slices x {per_group} layers per group exceeds the "
                       f"{num_layers} layers that carry LoRA")


def require_zero_b(initial: dict[str, torch.Tensor]) -> None:
    """Deactivating a group restores its initial value; that is "not trained" only if LoRA B
    starts at zero (peft's default). PiSSA, OLoRA, LoftQ and the like start B non-zero."""
    if any(k.endswith("lora_B.weight") and bool(v.any()) for k, v in initial.items()):
        raise BadInput("s3t needs a LoRA init with B = 0: a non-zero init is not undone by deactivating a group")


def stage_layers(engine: Engine, group: int) -> set[int]:
    """The layers S3T stage `group` trains, once the groups are known to fit the base model
    and the LoRA init to have B = 0."""
    num_layers = engine.base.model.config.num_hidden_layers
    check_groups(engine.config.top_layers(num_layers), engine.config.slices, engine.config.layers_per_group)
    require_zero_b(engine.initial_state().lora)
    return group_layers(num_layers, group, engine.config.layers_per_group)


@contextmanager
def trainable_layers(engine: Engine, layers: set[int]) -> Iterator[None]:
    """Only the LoRA parameters of these transformer layers require grad (the engine's
    optimizer takes exactly those); all LoRA parameters are trainable again afterwards."""
    lora = [(name, p) for name, p in engine.model.named_parameters() if "lora_" in name]
    try:
        for name, p in lora:
            p.requires_grad_(layer_of(name) in layers)
        yield
    finally:
        for _, p in lora:
            p.requires_grad_(True)


def active_weights(weights: dict[str, torch.Tensor], initial: dict[str, torch.Tensor], num_layers: int,
                   per_group: int, valid_prefix: int) -> dict[str, torch.Tensor]:
    """Deactivation: the LoRA weights with every layer outside groups 0..valid_prefix-1
    restored to its initial value."""
    active = set().union(*(group_layers(num_layers, g, per_group) for g in range(valid_prefix)))
    return {k: (v if layer_of(k) in active else initial[k]).clone() for k, v in weights.items()}
