"""What an operation needs: the workspace, the registry, and who is working."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ledger.workspace import Workspace
from unlearning.registry.mlflow import Registry
from unlearning.versions.store import ModelStore


@dataclass
class Context:
    ws: Workspace
    instance: str = "cli"  # names the worker in ledger entries (a consumer's host-pid, or the CLI; never a person)

    @cached_property
    def registry(self) -> Registry:
        return Registry.for_workspace(self.ws)

    @property
    def models(self) -> ModelStore:
        return ModelStore(self.ws)
