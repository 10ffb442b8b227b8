"""Base-model embeddings: the mean of the last hidden layer (after the final norm) over a text's tokens, adapters off.

APA uses them twice: to find an input's nearest validation samples (cosine similarity) and,
for the public-centroid partition, to cluster the public item catalogue. Only the frozen base
model is involved, so an embedding is a function of the text alone. With top-N LoRA layers it
starts from the text's cached prefix states, like every other forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from unlearning.training.engine import Engine, collate


@torch.inference_mode()
def embed(engine: Engine, token_ids: Sequence[Sequence[int]], batch_size: int = 1) -> torch.Tensor:
    """[n, hidden] float32 embeddings. With `batch_size=1` (the default) a text's embedding does
    not depend on which texts are embedded with it (no padding), so adding or dropping a
    validation sample never changes another one's bits."""
    engine.model.eval()
    rows = []
    with engine.model.disable_adapter():
        for i in range(0, len(token_ids), batch_size):
            chunk = token_ids[i:i + batch_size]
            batch = collate(chunk, [0] * len(chunk), engine.base.pad_id)
            mask = batch.attention_mask.to(engine.device)
            hidden = engine.last_hidden(batch, chunk).float()
            weights = mask.unsqueeze(-1).float()
            rows.append(((hidden * weights).sum(dim=1) / weights.sum(dim=1)).cpu())
    return torch.cat(rows) if rows else torch.zeros((0, engine.base.model.config.hidden_size))
