"""The frozen-prefix activation cache: hidden states entering the first trainable layer.

With LoRA on the top N layers only (`lora_layers = "top-N"`), the layers below are frozen and
carry no adapter, so the hidden states they produce for a token sequence are a function of
(base model, token ids) alone. Each sequence's states are computed once, at batch 1 and without
padding (so never a function of which other sequences share a batch), and every later forward
pass — training, scoring, APA's validation columns, the influence solver — starts from them
at the first trainable layer. Replay stays exact: a component rebuilt from scratch, with every
state recomputed, has the digest of the one trained from cached states, bit for bit.

The states are derived from records, so they are personal data: here they live in memory for
one engine; the record store keeps them encrypted under the subject's key and erases them with
the record (`operations.build.stored_prefixes`). A benchmark may share them across the engines
of one process (`shared_prefixes`); the service never does, so an erased record's states do not
outlive the operation that read them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from safetensors.torch import load, save

FORMAT = "erasure/prefix/v1"

TokenIds = tuple[int, ...]
_shared: dict[str, dict[TokenIds, torch.Tensor]] | None = None


def prefix_digest(base: dict, first_layer: int, environment: dict) -> str:
    """Identifies what a cached state is a function of besides its tokens: the base weights and
    tokenizer, where the prefix ends, and the software and device that computed it (another
    torch or device may round differently; such entries are never read, so never mixed)."""
    scope = {"format": FORMAT, "weights_sha256": base["weights_sha256"], "tokenizer_sha256": base["tokenizer_sha256"],
             "first_trainable_layer": first_layer,
             **{k: environment[k] for k in ("torch", "transformers", "device", "threads")}}
    return hashlib.sha256(json.dumps(scope, sort_keys=True).encode("utf-8")).hexdigest()


def to_bytes(hidden: torch.Tensor) -> bytes:
    return save({"hidden": hidden.contiguous()})


def from_bytes(payload: bytes) -> torch.Tensor:
    return load(payload)["hidden"]


class PrefixCache:
    """Token sequence -> [tokens, hidden] float32 states, computed on first use by `compute`."""

    def __init__(self, digest: str, compute: Callable[[Sequence[int]], torch.Tensor]):
        self.digest = digest
        self._compute = compute
        self._entries: dict[TokenIds, torch.Tensor] = {} if _shared is None else _shared.setdefault(digest, {})
        self.computed: set[TokenIds] = set()  # computed by this cache, not loaded: what a store may keep

    def get(self, ids: Sequence[int]) -> torch.Tensor:
        key = tuple(ids)
        hidden = self._entries.get(key)
        if hidden is None:
            hidden = self._entries[key] = self._compute(key)
            self.computed.add(key)
        return hidden

    def peek(self, ids: Sequence[int]) -> torch.Tensor | None:
        return self._entries.get(tuple(ids))

    def load(self, ids: Sequence[int], hidden: torch.Tensor) -> None:
        self._entries[tuple(ids)] = hidden

    def __len__(self) -> int:
        return len(self._entries)


@contextmanager
def shared_prefixes() -> Iterator[None]:
    """While active, every engine of this process shares one map of prefix states (per digest),
    so a benchmark training many methods on the same records computes each state once."""
    global _shared
    saved, _shared = _shared, {} if _shared is None else _shared
    try:
        yield
    finally:
        _shared = saved
