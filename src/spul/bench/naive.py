"""The straightforward SPUL step, kept only as the baseline the benchmarks compare against.

Full-vocabulary logits at every position (``model(...).logits``) and a separate, deep-copied reference model
run on the whole batch for the KL term. It computes the same loss as ``SpulTrainer`` (same answer positions,
same masking), so the two differ in cost only.
"""

from __future__ import annotations

import torch

from spul.methods.losses import answer_positions, kl_base_to_prompted, per_row_mean, spul_loss, token_nll
from spul.models.forward import unwrap


def naive_spul_loss(peft_model, reference, batch: dict, alpha: float, beta: float) -> torch.Tensor:
    from spul.models.soft_prompt import prompt_vectors

    base = unwrap(peft_model)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    embeds = base.get_input_embeddings()(ids)
    prompt = prompt_vectors(peft_model, ids.shape[0], embeds.dtype)
    full_mask = torch.cat([mask.new_ones(prompt.shape[:2]), mask], dim=1)
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
    logits = base(inputs_embeds=torch.cat([prompt, embeds], dim=1), attention_mask=full_mask, position_ids=positions,
                  use_cache=False).logits.float()
    answer_logits, targets, rows = answer_positions(logits, labels)
    row_nll = per_row_mean(token_nll(answer_logits, targets), rows, ids.shape[0])
    with torch.no_grad():
        ref_positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ref_logits = reference(input_ids=ids, attention_mask=mask, position_ids=ref_positions, use_cache=False).logits.float()
        ref_answer, _, _ = answer_positions(ref_logits, labels)
    retain = ~batch["is_forget"]
    token_kl = kl_base_to_prompted(answer_logits, ref_answer)
    keep = retain[rows]
    row_kl = per_row_mean(token_kl[keep], rows[keep], ids.shape[0])
    return spul_loss(row_nll, batch["is_forget"], row_kl, alpha, beta).total


def naive_spul_step(peft_model, reference, batch: dict, alpha: float, beta: float, optimizer,
                    max_grad_norm: float | None = None, scheduler=None) -> float:
    loss = naive_spul_loss(peft_model, reference, batch, alpha, beta)
    loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_([p for p in peft_model.parameters() if p.requires_grad], max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())
