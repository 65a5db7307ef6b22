"""SPUL's objective over a frozen model wrapped with a PEFT soft prompt."""

from __future__ import annotations

from spul.methods.losses import answer_positions, kl_base_to_prompted, per_row_mean, spul_loss, token_nll
from spul.methods.sharding import is_sharded
from spul.methods.training import AnswerTrainer
from spul.models.checkpointing import checkpointing_enabled
from spul.models.forward import hidden_states, lm_logits, unwrap
from spul.models.deep_prompt import is_prefix_tuning, prefix_layers
from spul.models.prefix_cache import hidden_after_prefix
from spul.models.soft_prompt import prompt_vectors


class SpulTrainer(AnswerTrainer):
    """L = L_f + α·L_r + β·L_kl; only the soft prompt has gradients.

    The KL reference is the same frozen model with the prompt left out (no second copy, no logit cache): the
    retain rows without the prefix, at the same answer positions. With ``reference_cache`` its final hidden
    states there are kept after a row's first visit (``AnswerTrainer.reference_answer_hidden``). With
    ``shared_prompt_kv`` the prompt runs once per step and every row attends to its keys/values.
    """

    def _share_prompt(self, model) -> bool:
        # transformers turns the key/value cache off under gradient checkpointing; with sharded weights the
        # prompt's keys/values reach the loss through the cache, past FSDP's hooks, which then fail to
        # re-gather the layer weights for their backward. Share only without either.
        return (bool(getattr(self.args, "shared_prompt_kv", True)) and not checkpointing_enabled(unwrap(model))
                and not is_sharded(model))

    def deep_answer_nll(self, model, inputs):
        """``answer_nll`` for a deep prompt: every row attends to the per-layer prefix keys/values (with gradient)."""
        if model.training:
            unwrap(model).eval()
        dtype = unwrap(model).get_input_embeddings().weight.dtype
        hidden = hidden_after_prefix(model, prefix_layers(model, dtype), inputs["input_ids"], inputs["attention_mask"])
        h, targets, rows = answer_positions(hidden, inputs["labels"])
        logits = lm_logits(model, h)
        return per_row_mean(token_nll(logits, targets), rows, inputs["labels"].shape[0]), logits, rows

    def batch_loss(self, model, inputs):
        batch = inputs["input_ids"].shape[0]
        if is_prefix_tuning(model):
            row_nll, logits, rows = self.deep_answer_nll(model, inputs)
        else:
            embed_dtype = model.get_input_embeddings().weight.dtype
            prompt = prompt_vectors(model, 1 if self._share_prompt(model) else batch, embed_dtype)
            row_nll, logits, rows = self.answer_nll(model, inputs, prompt, with_hidden=True)
        retain = ~inputs["is_forget"]
        row_kl = None
        if self.args.beta > 0 and bool(retain.any()):
            base_h = self.reference_answer_hidden(inputs, retain, lambda ids, mask: hidden_states(model, ids, mask, None),
                                                  cache=bool(getattr(self.args, "reference_cache", True)))
            base_logits = lm_logits(model, base_h)
            retain_tokens = retain[rows]
            token_kl = kl_base_to_prompted(logits[retain_tokens], base_logits)
            # map retain-token KLs back to their rows; forget rows get 0 and are masked out in spul_loss
            row_kl = per_row_mean(token_kl, rows[retain_tokens], batch)
        parts = spul_loss(row_nll, inputs["is_forget"], row_kl, self.args.alpha, self.args.beta)
        self.record(total=parts.total, forget=parts.forget, retain=parts.retain, kl=parts.kl)
        return parts.total, {"row_nll": row_nll}
