"""Robust training: forget AND retain rows rewritten with the attack suite's training pools (``data/attacks.py``).

The same share of rows on both sides gets the same kinds of rewrite, so a prompt cannot learn "an attack means
forget". Which row gets which rewrite in which epoch is a function of (seed, epoch, split, row): a resumed run
sees exactly the rows an uninterrupted one would. Rewritten rows carry ``row_id = -1``, so the trainer's
reference cache (keyed by data-set row) never serves an unrewritten row's reference for them.

Adversarial injection search (``augment.adversarial_every``, ``AdversarialSearchCallback``): every K optimizer
steps a seeded handful of injection attacks from the training pool is scored against the *current* prompt on a
seeded handful of train-forget rows; the one under which the model gets most of them right (ties: the higher
mean probability of the true label) is added to the injection pool. Attacks found during epoch e are used from
epoch e + 1 on (a row rewritten by the injection family then takes one of them half of the time), so which row
gets which rewrite stays a function of (seed, epoch, row, what was found before the epoch). The found attacks
are written next to the checkpoints (``adversarial.json``, before the step's checkpoint), restored up to the
resumed checkpoint's step, and recorded in the artifact.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

from transformers import TrainerCallback

from spul.data.attacks import Attack, AttackSuite, AugmentConfig, default_entities
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
                 seed: int, forget_target: str = "generic", paraphraser: Any = None):
        super().__init__(examples)
        self.cfg = cfg
        self.seed = cfg.seed if cfg.seed is not None else seed
        task_cfg: TaskConfig = encoder.task.config
        self.template = task_cfg.template
        if paraphraser is None and cfg.paraphrase_model:
            from spul.models.paraphrase import paraphraser_for

            paraphraser = paraphraser_for(cfg.paraphrase_model)
        self.suite = AttackSuite(seed=self.seed, entities=cfg.entities if cfg.entities is not None else default_entities(),
                                 label_words=task_cfg.label_words, multiple_choice=task_cfg.kind is TaskKind.MULTIPLE_CHOICE,
                                 paraphraser=paraphraser)
        self.encoder = encoder
        self._encoders: dict[str, TaskEncoder] = {self.template: encoder}
        self.texts = {Split.TRAIN_FORGET: data[Split.TRAIN_FORGET]["text"].tolist(), Split.TRAIN_RETAIN: data[Split.TRAIN_RETAIN]["text"].tolist()}
        self.forget_labels = [int(x) for x in data[Split.TRAIN_FORGET]["label"].tolist()]
        self.adversarial: list[tuple[int, Attack]] = []  # (epoch it was found in, attack), from the adversarial search
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
        found = [a for e, a in self.adversarial if e < epoch] if family == "injection" else []
        if found and rng.random() < 0.5:  # half of the injection rewrites use the attacks the search found
            attack = found[rng.randrange(len(found))]
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


class AdversarialSearchCallback(TrainerCallback):
    """Every ``cfg.adversarial_every`` steps, the injection (from the training pool) that most restores forget
    accuracy against the current prompt joins ``dataset``'s injection pool (see the module docstring)."""

    FILE = "adversarial.json"

    def __init__(self, dataset: AugmentedDataset, model, encoder: TaskEncoder):
        self.dataset, self.model, self.encoder = dataset, model, encoder
        self.cfg = dataset.cfg
        self.found: list[dict[str, Any]] = []

    def restore(self, checkpoint: str | None) -> None:
        """The attacks found up to ``checkpoint``'s step (a resumed run continues with exactly those)."""
        import json
        from pathlib import Path

        self.found = []
        if checkpoint:
            path = Path(checkpoint).parent / self.FILE
            step = int(Path(checkpoint).name.rsplit("-", 1)[-1])
            if path.is_file():
                self.found = [f for f in json.loads(path.read_text(encoding="utf-8")) if int(f["step"]) <= step]
        self.dataset.adversarial = [(int(f["epoch"]), Attack(*f["attack"])) for f in self.found]

    def candidates(self, step: int) -> tuple[list[Attack], list[int]]:
        """The seeded injection candidates and train-forget rows of the search at ``step``."""
        rng = random.Random(zlib.crc32(f"{self.dataset.seed}\x1fadversarial\x1f{step}".encode()))
        pool = self.dataset.suite.pool("injection", "train")
        n_forget = len(self.dataset.forget_labels)
        return (rng.sample(pool, min(self.cfg.adversarial_candidates, len(pool))),
                sorted(rng.sample(range(n_forget), min(self.cfg.adversarial_rows, n_forget))))

    def score(self, attacks: list[Attack], rows: list[int]) -> list[dict[str, Any]]:
        """Forget accuracy (and mean true-label probability) of the current prompt under each attack."""
        import numpy as np
        import torch

        from spul.models.deep_prompt import deep_prefix_applied, is_prefix_tuning, prefix_layers
        from spul.models.forward import unwrap
        from spul.models.scoring import score_prompts
        from spul.models.soft_prompt import prompt_vectors

        model = self.model
        was_training = model.training
        model.eval()
        labels = np.asarray([self.dataset.forget_labels[i] for i in rows])
        texts = [self.dataset.texts[Split.TRAIN_FORGET][i] for i in rows]
        out = []
        try:
            dtype = unwrap(model).get_input_embeddings().weight.dtype
            with torch.no_grad():
                deep = is_prefix_tuning(model)
                layers = [(k.detach(), v.detach()) for k, v in prefix_layers(model, dtype)] if deep else None
                vectors = None if deep else prompt_vectors(model, 1, dtype).detach()
            for attack in attacks:
                prompts = self.encoder.encode_prompts([self.dataset.suite.apply(attack, t, self.dataset.template)[0] for t in texts])
                if deep:
                    with deep_prefix_applied(model, layers):
                        scores = score_prompts(model, self.encoder, prompts, batch_size=len(prompts))
                else:
                    scores = score_prompts(model, self.encoder, prompts, batch_size=len(prompts),
                                           prompt_provider=lambda n, r: (vectors.expand(n, -1, -1), None))
                prob = scores.label_probabilities()[np.arange(len(labels)), labels]
                out.append({"attack": [attack.family, attack.kind, attack.payload],
                            "accuracy": float((scores.predictions == labels).mean()), "label_probability": float(prob.mean())})
        finally:
            model.train(was_training)
        return out

    def on_step_end(self, args, state, control, **kwargs):
        every = self.cfg.adversarial_every
        if not every or state.global_step % every or any(f["step"] == state.global_step for f in self.found):
            return control
        attacks, rows = self.candidates(state.global_step)
        scored = self.score(attacks, rows)
        best = max(scored, key=lambda r: (r["accuracy"], r["label_probability"]))
        epoch = int((state.epoch or 0.0) - 1e-6) if state.epoch else 0
        self.found.append({"step": state.global_step, "epoch": epoch, **best, "candidates": len(scored)})
        self.dataset.adversarial.append((epoch, Attack(*best["attack"])))
        # next to the checkpoints, written before this step's checkpoint: a resume keeps the entries up to its step
        from pathlib import Path

        from spul.io import write_json

        if Path(args.output_dir).is_dir() and state.is_world_process_zero:
            write_json(Path(args.output_dir) / self.FILE, self.found)
        return control
