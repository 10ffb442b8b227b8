"""Base models: the tiny test model and the packaged SmolLM2-135M-Instruct."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from unlearning.training import base_models as models
from unlearning.training.engine import collate


def test_tiny_model_is_deterministic_and_maps_answers_to_single_tokens():
    first, second = models.load_base("tiny"), models.load_base("tiny")
    assert first.descriptor == second.descriptor
    # The tokenizer is trained in-process; a second training run gives the same vocabulary.
    assert models.tiny_tokenizer.__wrapped__().backend_tokenizer.to_str() == first.tokenizer.backend_tokenizer.to_str()
    assert first.encode_answer("Yes") == [first.yes_id] and first.encode_answer("No") == [first.no_id]
    assert first.yes_id != first.no_id
    ids = first.encode_prompt("Liked: \"Ünïcode ☃ (1999)\"")
    assert ids[0] == first.tokenizer.bos_token_id and first.tokenizer.decode(ids[1:]).startswith("Liked:")


def test_lora_forward_backward_step_on_tiny_model():
    base = models.load_base("tiny")
    torch.manual_seed(0)
    model = get_peft_model(base.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  task_type="CAUSAL_LM"))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    sequences = [base.encode_prompt("Target movie: \"Star night (1990)\"") + [base.yes_id],
                 base.encode_prompt("Target movie: \"Iron (1970)\"") + [base.no_id]]
    batch = collate(sequences, [1, 1], base.pad_id)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    before = {n: p.detach().clone() for n, p in trainable.items()}
    loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                 labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable.values())
    assert any(p.grad.abs().sum() > 0 for n, p in trainable.items() if "lora_B" in n)
    torch.optim.AdamW(trainable.values(), lr=1e-2).step()
    assert any(not torch.equal(before[n], p) for n, p in trainable.items())


@pytest.mark.assets
def test_packaged_smollm2_loads_and_scores():
    base = models.load_base(models.SMOLLM2)
    assert (models.user_cache_dir() / "models" / "smollm2-135m-instruct" / "config.json").is_file()
    assert base.model.config.num_hidden_layers == 30 and base.model.config.vocab_size == 49152
    assert (base.yes_id, base.no_id) == (10539, 5230)
    ids = base.encode_prompt("Is Paris in France? Answer Yes or No.")
    assert base.tokenizer.decode(ids).startswith("<|im_start|>")
    with torch.inference_mode():
        logits = base.model(input_ids=torch.tensor([ids]), logits_to_keep=1).logits[0, -1]
    p_yes = torch.softmax(logits[[base.yes_id, base.no_id]].float(), dim=-1)[0].item()
    assert torch.isfinite(logits).all() and 0.0 < p_yes < 1.0


def test_local_checkpoint_directory_is_a_base(tmp_path):
    tiny = models.load_base("tiny")
    tiny.model.save_pretrained(tmp_path / "ckpt")
    tiny.tokenizer.save_pretrained(tmp_path / "ckpt")
    local = models.load_base(str(tmp_path / "ckpt"))
    assert local.name == str(tmp_path / "ckpt")
    assert local.descriptor["weights_sha256"] == tiny.descriptor["weights_sha256"]
    assert local.encode_prompt("Liked: none") == tiny.encode_prompt("Liked: none")
    assert (local.yes_id, local.no_id) == (tiny.yes_id, tiny.no_id)
