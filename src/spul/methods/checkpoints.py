"""How spul's trainers write and read checkpoints: safetensors + JSON instead of pickle, each checkpoint folder
renamed into place only when complete, and every trainable parameter saved as it is (a P-tuning adapter file
holds only the encoder's output). A ``transformers.Trainer`` mixin; the file format itself is
``spul.methods.safe_checkpoint``.

A trainer using it provides ``peft_model`` and ``checkpoint_model(model)`` (the PEFT model behind any wrapper).
"""

from __future__ import annotations

import os

from spul.io import write_text
from spul.methods import safe_checkpoint


class SafeCheckpoints:
    """Overrides of ``transformers.Trainer``'s checkpoint methods; put it before ``Trainer`` in the bases."""

    _spul_staging = False

    def _simple_saving(self) -> bool:
        return self.args.world_size <= 1 and not self.is_deepspeed_enabled and not self.is_fsdp_enabled

    def _get_output_dir(self, trial) -> str:
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, safe_checkpoint.STAGING) if self._spul_staging else run_dir

    def _save_checkpoint(self, model, trial) -> None:
        if not self._simple_saving():
            return super()._save_checkpoint(model, trial)
        run_dir = self._get_output_dir(trial)

        def write() -> None:
            self._spul_staging = True
            try:
                super(SafeCheckpoints, self)._save_checkpoint(model, trial)
            finally:
                self._spul_staging = False

        safe_checkpoint.save_checkpoint_atomically(run_dir, f"checkpoint-{self.state.global_step}", write, self.args.save_total_limit)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir or self.args.output_dir
        if self.args.should_save:  # the PEFT model's own format (adapter files), not the LossModule's state dict
            os.makedirs(output_dir, exist_ok=True)
            if state_dict is not None:  # gathered by the engine (FSDP, DeepSpeed) under the LossModule's names
                state_dict = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state_dict.items()}
            self.peft_model.save_pretrained(output_dir, state_dict=state_dict)
            if self.processing_class is not None:
                self.processing_class.save_pretrained(output_dir)
        if self.args.should_save and not self.is_deepspeed_enabled and not self.is_fsdp_enabled:
            # everything training updates, as it is: a P-tuning adapter file holds only the encoder's *output*
            # (under DDP and spul's frozen-weight sharding the trainable parameters are whole on every process)
            safe_checkpoint.save_trainable(self.peft_model, output_dir)
        if self.args.should_save:  # JSON, never the pickled training_args.bin
            write_text(os.path.join(output_dir, "training_args.json"), self.args.to_json_string())

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        inner = self.checkpoint_model(model)
        super()._load_from_checkpoint(resume_from_checkpoint, inner)
        # the adapter loader put a P-tuning prompt's output where its input belongs: restore the real state
        safe_checkpoint.load_trainable(inner, resume_from_checkpoint)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if not self._simple_saving():
            return super()._save_optimizer_and_scheduler(output_dir)
        safe_checkpoint.save_state(self.optimizer.state_dict(), output_dir, "optimizer")
        safe_checkpoint.save_state(self.lr_scheduler.state_dict(), output_dir, "scheduler")

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if not safe_checkpoint.has_state(checkpoint, "optimizer"):
            return super()._load_optimizer_and_scheduler(checkpoint)
        self.optimizer.load_state_dict(safe_checkpoint.load_state(checkpoint, "optimizer"))
        self.lr_scheduler.load_state_dict(safe_checkpoint.load_state(checkpoint, "scheduler"))

    def _save_scaler(self, output_dir: str) -> None:
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and self._simple_saving():
            safe_checkpoint.save_state(scaler.state_dict(), output_dir, "scaler")
        elif scaler is not None:
            super()._save_scaler(output_dir)

    def _load_scaler(self, checkpoint: str | None) -> None:
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and safe_checkpoint.has_state(checkpoint, "scaler"):
            scaler.load_state_dict(safe_checkpoint.load_state(checkpoint, "scaler"))
        else:
            super()._load_scaler(checkpoint)

    def _save_rng_state(self, output_dir: str) -> None:
        if not self._simple_saving():
            return super()._save_rng_state(output_dir)
        safe_checkpoint.save_state(safe_checkpoint.rng_state(), output_dir, "rng_state")

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if not safe_checkpoint.has_state(checkpoint, "rng_state"):
            return super()._load_rng_state(checkpoint)
        safe_checkpoint.set_rng_state(safe_checkpoint.load_state(checkpoint, "rng_state"))
