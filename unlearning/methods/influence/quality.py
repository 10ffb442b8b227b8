"""What an influence update did, measured when it is made (for the certificate's approximate block).

The exact retrain comes later, after the old records are shredded, so the gap to it cannot be
measured here (`erasure bench unlearning` measures it, with the retrain at hand). What can be:
the old records' P(Yes) and their loss-based membership-inference AUC against held-out records,
and the AUC on those held-out records, under the adapter as trained and as updated.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import mean

import torch

from unlearning.data.records import Record
from unlearning.evaluation import metrics, mia_auc
from unlearning.training.engine import Engine

HELD_OUT = 32  # held-out records scored per update (their prefix states are stored after the first)


def measure(engine: Engine, before: dict[str, torch.Tensor], after: dict[str, torch.Tensor],
            old: Sequence[Record], held_out: Sequence[Record]) -> dict:
    """Float-free (certificates are canonical JSON): decimals as strings, "n/a" where a measure
    does not apply (no held-out records, or held-out labels of one class)."""
    scored = [r for r in held_out if r.answer in ("Yes", "No")]
    old = [r for r in old if r.answer in ("Yes", "No")]
    prompts = [engine.base.encode_prompt(r.prompt) for r in [*old, *scored]]
    out: dict[str, object] = {"oldRecords": len(old), "heldOutRecords": len(scored)}
    for label, lora in (("Original", before), ("Updated", after)):
        p = engine.p_yes(lora, prompts) if prompts else []
        on_old, on_held_out = p[:len(old)], p[len(old):]
        out[f"oldPYes{label}"] = _fmt(mean(on_old) if on_old else None)
        out[f"heldOutAuc{label}"] = _fmt(metrics([int(r.answer == "Yes") for r in scored], on_held_out, [None]).auc
                                         if scored else None)
        out[f"miaAuc{label}"] = _fmt(mia_auc(on_old, old, on_held_out, scored) if old and scored else None)
    return out


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
