"""APA's aggregator and its per-sample merged adapter (Hu et al. 2024, Eq. 5-8).

The aggregator is a component: a validation pool (records of validation subjects, sorted by
commitment; its manifest) with, per row, the label, the base-model embedding and every
adapter's P(Yes). Each prediction column names the adapter it came from by component id and
weights sha256, so it can only be served beside exactly that adapter.

Every row is computed alone (batch size 1), so a row's bits do not depend on the other rows:
dropping an erased subject's rows gives exactly the aggregator built without them, and a
retrained adapter's column is simply recomputed.

Inference: the input's top-n validation neighbours by cosine similarity of base-model
embeddings give error_k = mean |y - P_k(Yes)|, adapter weights w = softmax(-tau * error),
and one forward pass with the merged adapter, on every LoRA-ed linear layer either
  D  (decomposition):     W0 x + s (sum_k w_k B_k)(sum_k w_k A_k) x
  ND (non-decomposition): W0 x + s sum_k w_k B_k (A_k x)   (no d_out x d_in matrix is built).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.progress import Progress
from safetensors import safe_open
from safetensors.torch import save_file

from unlearning.data.records import StoredRecord
from unlearning.training.embeddings import embed
from unlearning.training.engine import Engine
from unlearning.versions.layout import AGGREGATOR_FILE

INFERENCE_BATCH = 8


@dataclass(frozen=True)
class Aggregator:
    commitments: tuple[bytes, ...]  # the pool's rows, ascending (the manifest's order)
    labels: torch.Tensor  # [n] float32: 1.0 for "Yes", 0.0 for "No"
    embeddings: torch.Tensor  # [n, hidden] float32 base-model embeddings of the prompts
    adapters: tuple[tuple[str, str], ...]  # prediction columns: (component id, weights sha256)
    predictions: torch.Tensor  # [n, K] float32: P(Yes) of column k's adapter on row i

    def without_records(self, erased: Iterable[bytes]) -> "Aggregator":
        """The pool without these commitments' rows (erased validation subjects); no model needed."""
        erased = set(erased)
        keep = [i for i, c in enumerate(self.commitments) if c not in erased]
        return replace(self, commitments=tuple(self.commitments[i] for i in keep), labels=self.labels[keep],
                       embeddings=self.embeddings[keep], predictions=self.predictions[keep])

    def without_adapters(self, component_ids: Iterable[str]) -> "Aggregator":
        """Without the prediction columns of these adapters (dropped or to be recomputed)."""
        dropped = set(component_ids)
        keep = [k for k, (cid, _) in enumerate(self.adapters) if cid not in dropped]
        return replace(self, adapters=tuple(self.adapters[k] for k in keep), predictions=self.predictions[:, keep])

    def with_predictions(self, engine: Engine, adapters: Sequence[tuple[str, str, dict]],
                         prompts: Sequence[Sequence[int]], progress: Progress | None = None) -> "Aggregator":
        """Columns in the order of `adapters` ((id, weights sha256, LoRA weights)): each kept if
        this aggregator has it for the same weights, else computed on `prompts` (one per row)."""
        have = {column: k for k, column in enumerate(self.adapters)}
        columns = []
        for cid, sha, lora in adapters:
            if (cid, sha) in have:
                columns.append(self.predictions[:, have[(cid, sha)]])
            else:
                scores = engine.p_yes(lora, prompts, batch_size=1, progress=progress, label=f"validation {cid}")
                columns.append(torch.tensor(scores, dtype=torch.float32))
        predictions = torch.stack(columns, dim=1) if columns else torch.zeros((len(self.commitments), 0))
        return replace(self, adapters=tuple((cid, sha) for cid, sha, _ in adapters), predictions=predictions)

    def adapter_weights(self, queries: torch.Tensor, tau: float, neighbours: int) -> torch.Tensor:
        """[b, K] softmax(-tau * error_k) over each query's nearest validation rows (uniform if
        the pool is empty)."""
        if not self.commitments:
            return torch.full((len(queries), len(self.adapters)), 1.0 / len(self.adapters))
        similarity = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(self.embeddings, dim=1).T
        nearest = similarity.topk(min(neighbours, len(self.commitments)), dim=1).indices  # [b, n]
        errors = (self.labels[nearest].unsqueeze(-1) - self.predictions[nearest]).abs().mean(dim=1)  # [b, K]
        return torch.softmax(-tau * errors, dim=1)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        commitments = torch.tensor([list(c) for c in self.commitments], dtype=torch.uint8).reshape(-1, 32)
        tensors = {"commitments": commitments, "labels": self.labels, "embeddings": self.embeddings,
                   "predictions": self.predictions}
        save_file({k: v.contiguous() for k, v in tensors.items()}, directory / AGGREGATOR_FILE,
                  metadata={"adapters": json.dumps([list(a) for a in self.adapters])})

    @classmethod
    def load(cls, directory: Path) -> "Aggregator":
        with safe_open(directory / AGGREGATOR_FILE, framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            adapters = tuple(tuple(a) for a in json.loads(f.metadata()["adapters"]))
        return cls(tuple(bytes(row.tolist()) for row in tensors["commitments"]), tensors["labels"],
                   tensors["embeddings"], adapters, tensors["predictions"])


def build(engine: Engine, pool: Sequence[StoredRecord], adapters: Sequence[tuple[str, str, dict]],
          previous: Aggregator | None = None, progress: Progress | None = None) -> Aggregator:
    """The aggregator of this pool and these adapters ((id, weights sha256, LoRA weights)),
    reusing the rows and columns of `previous` that are still right."""
    rows = sorted(pool, key=lambda r: r.commitment)
    commitments = tuple(r.commitment for r in rows)
    prompts = [engine.base.encode_prompt(r.prompt) for r in rows]
    if previous is not None and set(commitments) <= set(previous.commitments):
        start = previous.without_records(set(previous.commitments) - set(commitments))
    else:
        start = Aggregator(commitments, torch.tensor([float(r.answer == "Yes") for r in rows]),
                           embed(engine, prompts), (), torch.zeros((len(rows), 0)))
    return start.with_predictions(engine, adapters, prompts, progress)


@contextmanager
def _merged(engine: Engine, adapters: Sequence[dict], merge: str) -> Iterator[dict]:
    """Forward hooks that add the per-sample merged LoRA update on every LoRA-ed layer, with
    the engine's own LoRA disabled; set `weights` ([b, K]) in the yielded dict per batch."""
    batch: dict = {"weights": None}
    hooks = []
    for key in (k for k in adapters[0] if k.endswith(".lora_A.weight")):
        name = key.removesuffix(".lora_A.weight")
        module = engine.model.get_submodule(name)
        a = torch.stack([adapter[key] for adapter in adapters]).to(engine.device)  # [K, r, in]
        b = torch.stack([adapter[f"{name}.lora_B.weight"] for adapter in adapters]).to(engine.device)  # [K, out, r]

        def add_update(mod, args, output, a=a, b=b, scaling=module.scaling["default"]):  # type: ignore[no-untyped-def]
            x, w = args[0], batch["weights"].to(args[0].dtype)
            if merge == "d":
                mean_a, mean_b = torch.einsum("bk,kri->bri", w, a.to(x.dtype)), torch.einsum("bk,kor->bor", w, b.to(x.dtype))
                update = torch.einsum("btr,bor->bto", torch.einsum("bti,bri->btr", x, mean_a), mean_b)
            else:
                low_rank = torch.einsum("bti,kri->btkr", x, a.to(x.dtype)) * w[:, None, :, None]
                update = torch.einsum("btkr,kor->bto", low_rank, b.to(x.dtype))
            return output + scaling * update

        hooks.append(module.register_forward_hook(add_update))
    try:
        with engine.model.disable_adapter():
            yield batch
    finally:
        for hook in hooks:
            hook.remove()


def merged_p_yes(engine: Engine, adapters: Sequence[dict], weights: torch.Tensor, prompts: Sequence[Sequence[int]],
                 merge: str, progress: Progress | None = None) -> list[float]:
    """P(Yes) of each prompt under its own merged adapter (row i of `weights`), one pass each."""
    out: list[float] = []
    task = progress.add_task("scoring merged", total=len(prompts)) if progress else None
    with _merged(engine, adapters, merge) as batch:
        for i in range(0, len(prompts), INFERENCE_BATCH):
            chunk = prompts[i:i + INFERENCE_BATCH]
            batch["weights"] = weights[i:i + INFERENCE_BATCH].to(engine.device)
            # p_yes loads adapters[0] into the engine's slot, but disable_adapter() bypasses it.
            out += engine.p_yes(adapters[0], chunk, batch_size=len(chunk))
            if progress:
                progress.update(task, advance=len(chunk))
    return out
