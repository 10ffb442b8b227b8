"""The LoRA training loop and the scorer.

One `Engine` wraps a base model with a LoRA adapter (peft). Training is stateless between
calls: `train(state, examples, samples, label)` starts from a `TrainingState` (weights,
optimizer, scheduler, RNG) and returns the next one, so a component resumed from a saved
state is bit-for-bit the component trained without interruption.

Determinism: LoRA init and dropout RNG come from the seed; the data order of every pass is
`HMAC(seed, label || pass || record id)`; `torch.use_deterministic_algorithms(True)` and a
fixed thread count. The loss covers answer tokens only and logits are computed only at the
answer positions; sequences are left-padded so those positions line up at the end.

With `lora_layers = "top-N"` only the top N layers carry LoRA; every forward pass starts at
the first of them from the cached states of the frozen layers below (`training/prefix.py`),
left-padded with zeros (masked out of attention) like the token ids they stand for.
"""

from __future__ import annotations

import copy
import os
import platform
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import peft
import torch
import torch.nn.functional as F
import transformers
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from rich.progress import Progress
from transformers.masking_utils import create_causal_mask

from ledger.errors import BadInput
from unlearning.data.partition import training_order
from unlearning.data.records import Record
from unlearning.training.base_models import TINY, BaseModel
from unlearning.training.checkpoint import TrainingState
from unlearning.training.config import TrainConfig
from unlearning.training.prefix import PrefixCache, prefix_digest


@dataclass(frozen=True)
class Example:
    record_id: str
    prompt_ids: tuple[int, ...]
    answer_ids: tuple[int, ...]


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L], left-padded
    attention_mask: torch.Tensor  # [B, L]
    position_ids: torch.Tensor  # [B, L], counting from each sequence's first real token
    answer_mask: torch.Tensor  # [B, A]: which of the last A positions hold answer tokens


def configure_torch(threads: int) -> None:
    """Deterministic kernels and a fixed thread count (both are part of what replay reproduces)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def bf16_supported() -> bool:
    """Whether the device has native bf16: CUDA with bf16, or a CPU with AVX-512 BF16 / AMX."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def default_precision(base: str) -> str:
    """bf16 autocast where the device has native bf16, else fp32. Measured here (`erasure bench
    speed --bf16`, AVX-512 BF16, top-4 cached): 0.30 s/step bf16 vs 0.48 fp32; where bf16 is
    emulated (AVX2 only) it is about 30x slower than fp32 (all layers: 123 vs 4 s/step)."""
    return "bf16" if base != TINY and bf16_supported() else "fp32"


def default_lora_layers(base: str) -> str:
    """The fastest exact path on this device (README, performance): on a CPU, LoRA on the top 4
    layers with the frozen prefix cached; on a GPU, or for the 2-layer tiny base, every layer."""
    return "all" if base == TINY or torch.cuda.is_available() else "top-4"


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def environment(config: TrainConfig) -> dict:
    """The software and hardware facts a replay must match to reproduce digests."""
    dev = device()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu {platform.machine()}",
        "threads": config.threads,
        "precision": config.precision,
        "deterministic": True,
        "seed": config.seed,
        "config_sha256": config.sha256(),
    }


def encode(base: BaseModel, max_length: int, records: Sequence[Record]) -> list[Example]:
    """Token ids of prompts and answers; BadInput for an empty answer or more than `max_length` tokens."""
    examples = []
    for r in records:
        prompt, answer = base.encode_prompt(r.prompt), base.encode_answer(r.answer)
        if not answer:
            raise BadInput(f"record {r.record_id!r} has an empty answer")
        if len(prompt) + len(answer) > max_length:
            raise BadInput(f"record {r.record_id!r} has {len(prompt) + len(answer)} tokens, "
                           f"more than max_length {max_length}")
        examples.append(Example(r.record_id, tuple(prompt), tuple(answer)))
    return examples


def collate(sequences: Sequence[Sequence[int]], answer_lengths: Sequence[int], pad_id: int) -> Batch:
    length = max(len(s) for s in sequences)
    answer_span = max(answer_lengths) if answer_lengths else 0
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, length - len(seq):] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, length - len(seq):] = 1
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    offsets = torch.arange(answer_span).unsqueeze(0)
    answer_mask = offsets >= answer_span - torch.tensor(answer_lengths, dtype=torch.long).unsqueeze(1)
    return Batch(input_ids, attention_mask, position_ids, answer_mask)


class Engine:
    """A base model with one LoRA adapter slot, trained and scored from explicit states."""

    def __init__(self, base: BaseModel, config: TrainConfig):
        configure_torch(config.threads)
        self.base = base
        self.config = config
        self.device = device()
        num_layers = base.model.config.num_hidden_layers
        self.first_trainable = num_layers - config.top_layers(num_layers)  # 0: every layer carries LoRA
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=list(config.target_modules), task_type="CAUSAL_LM",
                          layers_to_transform=list(range(self.first_trainable, num_layers)) if self.first_trainable
                          else None)
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            torch.manual_seed(config.seed)  # peft's default init: A kaiming-uniform, B zeros
            self.model = get_peft_model(base.model, lora).to(self.device)
        self.lora_config = self.model.peft_config["default"]
        self._initial_lora = self._lora_weights()
        self.prefixes = (PrefixCache(prefix_digest(base.descriptor, self.first_trainable, environment(config)),
                                     self._prefix_states) if self.first_trainable else None)

    # --- states -----------------------------------------------------------------------------

    def initial_state(self) -> TrainingState:
        """The seeded LoRA init, no optimizer state yet, and the RNG seeded from the config."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.config.seed)
            rng = self._rng_state()
        return TrainingState(lora=dict(self._initial_lora), optimizer=None, scheduler=None, rng=rng, step=0)

    def _lora_weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(self.model).items()}

    def _rng_state(self) -> dict[str, torch.Tensor]:
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return rng

    def _restore_rng(self, rng: dict[str, torch.Tensor]) -> None:
        torch.set_rng_state(rng["cpu"])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    def load_lora(self, weights: dict[str, torch.Tensor]) -> None:
        result = set_peft_model_state_dict(self.model, weights)
        if result.unexpected_keys:
            raise BadInput(f"adapter does not fit the base model: unexpected {result.unexpected_keys[:3]}")

    # --- data ---------------------------------------------------------------------------------

    def encode(self, records: Sequence[Record]) -> list[Example]:
        return encode(self.base, self.config.max_length, records)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16")

    # --- training -----------------------------------------------------------------------------

    def train(self, state: TrainingState, examples: Sequence[Example], samples: int, label: str,
              progress: Progress | None = None) -> TrainingState:
        """Continue from `state` for `samples` examples: whole passes over `examples` in the
        order `HMAC(seed, label/pass q || record id)`, then the start of one more pass."""
        stream: list[Example] = []
        passes = 0
        while examples and len(stream) < samples:
            stream += training_order(self.config.seed, f"{label}/pass{passes}", examples)
            passes += 1
        stream = stream[:samples]
        batches = [stream[i:i + self.config.batch_size] for i in range(0, len(stream), self.config.batch_size)]

        self.load_lora(state.lora)
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.config.lr, weight_decay=self.config.weight_decay)
        warmup = self.config.warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
        if state.optimizer is not None:  # after creating the scheduler, which would reset the lr
            optimizer.load_state_dict(copy.deepcopy(state.optimizer))  # torch aliases, then mutates, loaded tensors
            scheduler.load_state_dict(state.scheduler)
        self._restore_rng(state.rng)

        task = progress.add_task(label, total=len(batches)) if progress else None
        self.model.train()
        for batch_examples in batches:
            loss = self._answer_loss(batch_examples)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if progress:
                progress.update(task, advance=1, description=f"{label} loss {loss.item():.3f}")

        return TrainingState(
            lora=self._lora_weights(),
            optimizer=copy.deepcopy(optimizer.state_dict()),
            scheduler=copy.deepcopy(scheduler.state_dict()),
            rng=self._rng_state(),
            step=state.step + len(batches),
        )

    def _answer_loss(self, examples: Sequence[Example]) -> torch.Tensor:
        """Mean cross-entropy over the answer tokens of `examples`."""
        return F.cross_entropy(*self.answer_logits(examples))

    def answer_logits(self, examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor]:
        """([answer tokens, vocab] float32 logits predicting each answer token, [answer tokens] its id)."""
        sequences = [e.prompt_ids + e.answer_ids for e in examples]
        batch = collate(sequences, [len(e.answer_ids) for e in examples], self.base.pad_id)
        span = batch.answer_mask.shape[1]
        with self._autocast():
            # the position before each answer token predicts it
            logits = self._logits(batch, sequences, keep=span + 1)[:, :-1]
        mask = batch.answer_mask.to(self.device)
        targets = batch.input_ids[:, -span:].to(self.device)
        return logits[mask].float(), targets[mask]

    # --- scoring ------------------------------------------------------------------------------

    @torch.inference_mode()
    def p_yes(self, lora: dict[str, torch.Tensor], prompts: Sequence[Sequence[int]], batch_size: int = 8,
              progress: Progress | None = None, label: str = "scoring") -> list[float]:
        """P("Yes") = softmax over the {Yes, No} logits at the answer position, per prompt."""
        self.load_lora(lora)
        self.model.eval()
        task = progress.add_task(label, total=len(prompts)) if progress else None
        out: list[float] = []
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i:i + batch_size]
            batch = collate(chunk, [0] * len(chunk), self.base.pad_id)
            with self._autocast():
                logits = self._logits(batch, chunk, keep=1)[:, -1]
            pair = logits[:, [self.base.yes_id, self.base.no_id]].float()
            out += torch.softmax(pair, dim=-1)[:, 0].cpu().tolist()
            if progress:
                progress.update(task, advance=len(chunk))
        return out

    # --- forward passes -----------------------------------------------------------------------

    def _logits(self, batch: Batch, sequences: Sequence[Sequence[int]], keep: int) -> torch.Tensor:
        """[B, keep, vocab] logits at the last `keep` positions of the left-padded batch."""
        if not self.first_trainable:
            return self.model(
                input_ids=batch.input_ids.to(self.device),
                attention_mask=batch.attention_mask.to(self.device),
                position_ids=batch.position_ids.to(self.device),
                logits_to_keep=keep,
                use_cache=False,
            ).logits
        return self.model.get_base_model().lm_head(self._top_hidden(batch, sequences)[:, -keep:])

    def last_hidden(self, batch: Batch, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        """[B, L, hidden] states after the final norm (the model's current adapter applies)."""
        if not self.first_trainable:
            return self.model.get_base_model().model(
                input_ids=batch.input_ids.to(self.device),
                attention_mask=batch.attention_mask.to(self.device),
                position_ids=batch.position_ids.to(self.device),
                use_cache=False,
            ).last_hidden_state
        return self._top_hidden(batch, sequences)

    def _top_hidden(self, batch: Batch, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        """The trainable layers and the final norm, from the cached prefix states."""
        assert self.prefixes is not None
        states = [self.prefixes.get(s) for s in sequences]
        hidden = torch.zeros((len(states), batch.input_ids.shape[1], states[0].shape[-1]), dtype=states[0].dtype)
        for row, state in enumerate(states):
            hidden[row, hidden.shape[1] - len(state):] = state
        inner = self.model.get_base_model().model
        hidden = self._layers(inner.layers[self.first_trainable:], hidden.to(self.device),
                              batch.attention_mask.to(self.device), batch.position_ids.to(self.device))
        return inner.norm(hidden)

    def _layers(self, layers: Sequence[torch.nn.Module], hidden: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor) -> torch.Tensor:
        """Run decoder layers as the model's own forward does (mask, rotary embeddings, no KV cache)."""
        inner = self.model.get_base_model().model
        mask = create_causal_mask(config=inner.config, inputs_embeds=hidden, attention_mask=attention_mask,
                                  cache=None, position_ids=position_ids)
        rotary = inner.rotary_emb(hidden, position_ids=position_ids)
        for layer in layers:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=position_ids)
        return hidden

    @torch.no_grad()
    def _prefix_states(self, ids: Sequence[int]) -> torch.Tensor:
        """[tokens, hidden] float32 states of one sequence after the frozen layers: batch 1, no
        padding, no adapter in those layers, so a function of the base model and `ids` alone."""
        inner = self.model.get_base_model().model
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        hidden = inner.embed_tokens(input_ids)
        positions = torch.arange(len(ids), device=self.device).unsqueeze(0)
        hidden = self._layers(inner.layers[:self.first_trainable], hidden, torch.ones_like(input_ids), positions)
        return hidden[0].float().cpu().clone()
