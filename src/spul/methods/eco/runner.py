"""ECO training against the (familiarised) base model: classifier → σ search → artifact.

Artifact folder holds only ``spul.json``: the classifier head (JSON numbers), the corruption name, parameters
and tuned σ, the threshold, the search log and the base model fingerprint. ``load`` turns it into the
intervention ``Gated(EmbeddingCorruption(guard), classifier)``; evaluation lives in ``spul.evaluation`` and
the end-to-end protocol (``run_eco``, ``evaluate_eco``) in ``spul.pipeline``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from spul.artifacts import base_model_record, check_base, common_info, read_metadata, save_artifact
from spul.configuration import to_dict
from spul.data.encoding import TaskEncoder
from spul.data.splits import Split
from spul.errors import ArtifactError
from spul.interventions import EmbeddingCorruption, Gated
from spul.interventions.corruption import USES_SIGMA, Corruption, CorruptionConfig, EmbeddingGuard
from spul.io import write_json
from spul.methods.eco.classifier import PromptClassifier, error_rates, train_classifier
from spul.methods.eco.config import EcoConfig
from spul.methods.eco.optimize import search_sigma
from spul.methods.registry import TrainJob, register_method

log = logging.getLogger(__name__)


def train(job: TrainJob) -> Path:
    """Train the classifier, tune σ on train-forget, save the artifact; returns its folder."""
    from spul.models.loading import load_model, weights_fingerprint

    ecfg: EcoConfig = job.config
    data = job.data
    model, tokenizer = job.model_and_tokenizer or load_model(job.model)
    encoder = TaskEncoder(job.task, tokenizer, job.model.max_length)
    started = time.time()
    clf = train_classifier(ecfg.classifier, data[Split.TRAIN_FORGET]["text"].tolist(), data[Split.TRAIN_RETAIN]["text"].tolist())
    clf_seconds = time.time() - started
    clf.info["test"] = error_rates(clf, data[Split.TEST_FORGET]["text"].tolist(), data[Split.TEST_RETAIN]["text"].tolist())
    sigma, search_log, search_seconds = ecfg.corruption.sigma, [], 0.0
    if ecfg.search.enabled and ecfg.search.steps > 0 and ecfg.corruption.name in USES_SIGMA:
        forget = data[Split.TRAIN_FORGET].sample(frac=1.0, random_state=ecfg.corruption.seed).head(ecfg.search.max_rows)
        t = time.time()
        result = search_sigma(model, encoder, forget["text"].tolist(), forget["label"].to_numpy(), ecfg.corruption, ecfg.search,
                              tokenizer.pad_token_id)
        search_seconds = time.time() - t
        sigma, search_log = result.sigma, result.log
        log.info("ECO σ search: σ=%.4g objective=%.4f", result.sigma, result.objective)
    write_json(Path(job.work_dir) / "search_log.json", search_log)
    meta = {
        "method": "eco",
        **base_model_record(job.base, job.pretrained_model, job.familiarized_dir),
        "base_fingerprint": weights_fingerprint(model),
        "task": to_dict(job.task.config),
        "max_length": job.model.max_length,
        "hyperparameters": to_dict(ecfg),
        "corruption": {**to_dict(ecfg.corruption), "sigma": sigma},
        "classifier": clf.to_dict(),
        "search": {"log": search_log, "seconds": round(search_seconds, 1)},
        "training": {"classifier_seconds": round(clf_seconds, 1), "search_seconds": round(search_seconds, 1)},
        "data": {"source": data.source, "sizes": data.sizes(), "fingerprints": data.fingerprints()},
        "trainable_parameters": len(clf.weights) + 2,  # head weights + bias, and σ
    }
    return save_artifact(None, job.artifact_dir, meta)


def load_eco(folder: str | Path, model=None, pad_token_id: int | None = None, base_name: str = "") -> tuple[PromptClassifier, EmbeddingGuard, dict[str, Any]]:
    """Classifier, guard and metadata of an ECO artifact; checks the base model when ``model`` is given."""
    from spul.models.loading import weights_fingerprint

    meta = read_metadata(folder)
    if meta.get("method") != "eco" or "classifier" not in meta or "corruption" not in meta:
        raise ArtifactError(f"{str(folder)!r} is not an ECO artifact", "point at the folder written by spul eco (OUTPUT_DIR/eco/artifact)")
    if model is not None:
        check_base(meta, weights_fingerprint(model), base_name or meta.get("base_model", ""))
    try:
        params = dict(meta["corruption"])
        sigma = float(params.pop("sigma"))
        ccfg = CorruptionConfig(**{**params, "sigma": sigma})
        classifier = PromptClassifier.from_dict(meta["classifier"])
    except ArtifactError:
        raise
    except Exception as err:  # noqa: BLE001 - a malformed ECO artifact is refused, not fatal
        raise ArtifactError(f"ECO artifact {str(folder)!r} could not be loaded ({str(err).splitlines()[0][:150] if str(err) else type(err).__name__})",
                            "re-create it with spul eco") from None
    return classifier, EmbeddingGuard(Corruption(ccfg, sigma), pad_token_id), meta


def load(folder: Path, model, *, tokenizer=None, meta: dict[str, Any], name: str) -> Gated:
    pad = tokenizer.pad_token_id if tokenizer is not None else getattr(getattr(model, "config", None), "pad_token_id", None)
    classifier, guard, meta = load_eco(folder, None, pad)
    common = common_info(folder, meta)
    common["info"]["corruption"] = meta["corruption"].get("name")
    common["identity"] = f"eco:{common['identity']}"
    return Gated(name, EmbeddingCorruption(name, guard), classifier, kind="eco", **common)


def display(meta: dict[str, Any]) -> str:
    return f"ECO ({meta['corruption']['name']}, σ={float(meta['corruption']['sigma']):.3g})"


register_method("eco", EcoConfig, train, load, display, "prompt classifier + embedding corruption of flagged prompts (ECO)")
