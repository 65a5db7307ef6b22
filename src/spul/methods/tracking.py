"""Phase-labelled training progress: the tqdm bar says which phase runs ("familiarise", "unlearn"), and every
Trainer log line (loss, learning rate, ...) also goes to the ``spul.train`` logger, so ``OUTPUT/run.log`` holds it."""

from __future__ import annotations

import logging

from transformers import ProgressCallback, TrainerCallback

log = logging.getLogger("spul.train")


class PhaseProgressCallback(ProgressCallback):
    """The Trainer's progress bar with the phase as its description."""

    def __init__(self, phase: str):
        super().__init__()
        self.phase = phase

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        if state.is_world_process_zero:
            self.training_bar = tqdm(total=state.max_steps, dynamic_ncols=True, desc=self.phase)
        self.current_step = 0


class PhaseLogCallback(TrainerCallback):
    """Trainer logs as ``PHASE step N/M: key=value ...`` records of the ``spul.train`` logger."""

    def __init__(self, phase: str):
        self.phase = phase

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            items = " ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items())
            log.info("%s step %d/%d: %s", self.phase, state.global_step, state.max_steps, items)


def label_phase(trainer, phase: str) -> None:
    """Swap the Trainer's plain progress bar for a phase-labelled one and log its log lines."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(PhaseProgressCallback(phase))
    trainer.add_callback(PhaseLogCallback(phase))
