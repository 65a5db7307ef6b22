"""Robust training: forget AND retain rows rewritten with the attack suite's training pools (``data/attacks.py``).

The same share of rows on both sides gets the same kinds of rewrite, so a prompt cannot learn "an attack means
forget". Which row gets which rewrite in which epoch is a function of (seed, epoch, split, row): a resumed run
sees exactly the rows an uninterrupted one would. Rewritten rows carry ``row_id = -1``, so the trainer's
reference cache (keyed by data-set row) never serves an unrewritten row's reference for them.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

from transformers import TrainerCallback

from spul.data.attacks import AttackSuite, AugmentConfig, default_entities
from spul.data.encoding import EncodedExample, TaskEncoder
from spul.data.splits import Split, UnlearningData
from spul.data.tasks import Task, TaskConfig, TaskKind
from spul.methods.training import AnswerDataset, generic_choices


def _task_with_template(cfg: TaskConfig, template: str) -> TaskConfig:
    return TaskConfig(kind=cfg.kind, template=template, label_words=list(cfg.label_words), generic_labels=list(cfg.generic_labels),
                      question_column=cfg.question_column, choices_column=cfg.choices_column)


class AugmentedDataset(AnswerDataset):
    """``examples`` as built by ``build_examples`` (forget rows, then retain rows), rewritten per epoch."""

    def __init__(self, examples: list[EncodedExample], data: UnlearningData, encoder: TaskEncoder, cfg: AugmentConfig,
                 seed: int, forget_target: str = "generic"):
        super().__init__(examples)
        self.cfg = cfg
        self.seed = cfg.seed if cfg.seed is not None else seed
        task_cfg: TaskConfig = encoder.task.config
        self.template = task_cfg.template
        self.suite = AttackSuite(seed=self.seed, entities=cfg.entities if cfg.entities is not None else default_entities(),
                                 label_words=task_cfg.label_words, multiple_choice=task_cfg.kind is TaskKind.MULTIPLE_CHOICE)
        self.encoder = encoder
        self._encoders: dict[str, TaskEncoder] = {self.template: encoder}
        self.texts = {Split.TRAIN_FORGET: data[Split.TRAIN_FORGET]["text"].tolist(), Split.TRAIN_RETAIN: data[Split.TRAIN_RETAIN]["text"].tolist()}
        n_forget = len(self.texts[Split.TRAIN_FORGET])
        self.generic = generic_choices(n_forget, len(encoder.generic_ids), seed) if forget_target == "generic" else None
        self.epoch = 0
        self._cache: dict[tuple[int, int], dict[str, Any]] = {}

    def _encoder_for(self, template: str) -> TaskEncoder:
        if template not in self._encoders:
            self._encoders[template] = TaskEncoder(Task(_task_with_template(self.encoder.task.config, template)),
                                                   self.encoder.tokenizer, self.encoder.max_length)
        return self._encoders[template]

    def rewrite(self, i: int, epoch: int) -> tuple[str, str, str] | None:
        """(attack id, text, template) for row ``i`` in ``epoch``, or None when the row stays as it is."""
        if epoch < self.cfg.start_epoch or not self.cfg.enabled:
            return None
        ex = self.examples[i]
        split = Split.TRAIN_FORGET if ex.is_forget else Split.TRAIN_RETAIN
        key = (str(epoch), split.value, str(ex.index))
        rng = random.Random(zlib.crc32(("\x1f".join((str(self.seed), "augment") + key)).encode()))
        if rng.random() >= self.cfg.fraction:
            return None
        family = self.cfg.families[rng.randrange(len(self.cfg.families))]
        attack = self.suite.pick(family, "train", *key)
        text, template = self.suite.apply(attack, self.texts[split][ex.index], self.template)
        return attack.id, text, template

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = super().__getitem__(i)
        if not self.cfg.enabled or self.epoch < self.cfg.start_epoch:
            return row
        cached = self._cache.get((self.epoch, i))
        if cached is not None:
            return dict(cached)
        change = self.rewrite(i, self.epoch)
        if change is not None:
            ex = self.examples[i]
            _, text, template = change
            enc = self._encoder_for(template)
            prompt = enc.encode_prompts([text])[0]
            if ex.is_forget and self.generic is not None:
                target = enc.generic_ids[int(self.generic[ex.index])]
            else:
                target = enc.label_ids[ex.label]
            row = {**row, "input_ids": prompt + target[:-1], "prompt_len": len(prompt), "target_ids": target, "row_id": -1}
        if len(self._cache) > 4 * len(self.examples):
            self._cache.clear()
        self._cache[(self.epoch, i)] = row
        return dict(row)


class AugmentEpochCallback(TrainerCallback):
    """Tells the data set which epoch the Trainer is in (also after a resume mid-epoch)."""

    def __init__(self, dataset: AugmentedDataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.epoch = int((state.epoch or 0.0) + 1e-6)
        return control
