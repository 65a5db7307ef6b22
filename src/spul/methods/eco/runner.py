"""ECO end to end against the (familiarised) base model: classifier → σ search → artifact → evaluation.

Artifact folder (``output_dir/eco/artifact``) holds only ``spul.json``: the classifier head (JSON numbers),
the corruption name, parameters and tuned σ, the threshold, the search log and the base model fingerprint.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from spul.configuration import to_dict
from spul.data.encoding import TaskEncoder
from spul.data.splits import Split, UnlearningData
from spul.data.tasks import Task
from spul.errors import ArtifactError
from spul.evaluation.evaluate import ModelResult
from spul.io import sha256_text, write_json
from spul.methods.eco.classifier import PromptClassifier, error_rates, train_classifier
from spul.methods.eco.config import CorruptionConfig
from spul.methods.eco.corruptions import USES_SIGMA, Corruption
from spul.methods.eco.evaluate import evaluate_combined, evaluate_guarded, split_flags
from spul.methods.eco.hooks import EmbeddingGuard
from spul.methods.eco.optimize import search_sigma

log = logging.getLogger(__name__)


def eco_dir(cfg) -> Path:
    return cfg.out / "eco"


def _load_base(cfg, base: str):
    from spul.models.loading import load_model
    from spul.pipeline import _derived_model_config

    return load_model(_derived_model_config(cfg, base))


def train_eco(cfg, data: UnlearningData, base: str, model=None, tokenizer=None) -> Path:
    """Train the classifier, tune σ on train-forget, save the artifact; returns its folder."""
    from spul.artifacts import save_artifact
    from spul.models.loading import portable_model_ref, weights_fingerprint

    ecfg = cfg.eco
    if model is None:
        model, tokenizer = _load_base(cfg, base)
    encoder = TaskEncoder(Task(cfg.task), tokenizer, cfg.model.max_length)
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
    folder = eco_dir(cfg) / "artifact"
    write_json(eco_dir(cfg) / "search_log.json", search_log)
    meta = {
        "method": "eco",
        "base_model": portable_model_ref(base),
        "base_fingerprint": weights_fingerprint(model),
        "pretrained_model": portable_model_ref(cfg.model.name_or_path),
        "task": to_dict(cfg.task),
        "max_length": cfg.model.max_length,
        "hyperparameters": to_dict(ecfg),
        "corruption": {**to_dict(ecfg.corruption), "sigma": sigma},
        "classifier": clf.to_dict(),
        "search": {"log": search_log, "seconds": round(search_seconds, 1)},
        "training": {"classifier_seconds": round(clf_seconds, 1), "search_seconds": round(search_seconds, 1)},
        "data": {"source": data.source, "sizes": data.sizes(), "fingerprints": data.fingerprints()},
    }
    return save_artifact(None, folder, meta)


def load_eco(folder: str | Path, model=None, pad_token_id: int | None = None, base_name: str = "") -> tuple[PromptClassifier, EmbeddingGuard, dict[str, Any]]:
    """Classifier, guard and metadata of an ECO artifact; checks the base model when ``model`` is given."""
    from spul.artifacts import check_base, read_metadata
    from spul.models.loading import weights_fingerprint

    meta = read_metadata(folder)
    if meta.get("method") != "eco" or "classifier" not in meta or "corruption" not in meta:
        raise ArtifactError(f"{str(folder)!r} is not an ECO artifact", "point at the folder written by spul eco (OUTPUT_DIR/eco/artifact)")
    if model is not None:
        check_base(meta, weights_fingerprint(model), base_name or meta.get("base_model", ""))
    params = dict(meta["corruption"])
    sigma = float(params.pop("sigma"))
    ccfg = CorruptionConfig(**{**params, "sigma": sigma})
    return PromptClassifier.from_dict(meta["classifier"]), EmbeddingGuard(Corruption(ccfg, sigma), pad_token_id), meta


def evaluate_eco(cfg, data: UnlearningData, artifact: str | Path, base: str, spul_artifact: str | Path | None = None,
                 model=None, tokenizer=None, include_base: bool = True) -> list[ModelResult]:
    """Rows: base, ECO, and (with a SPUL artifact) SPUL and SPUL-on-flagged-prompts (combined)."""
    from spul.artifacts import load_soft_prompt
    from spul.evaluation.evaluate import evaluate_model
    from spul.models.loading import weights_fingerprint
    from spul.models.soft_prompt import prompt_vectors

    if model is None:
        model, tokenizer = _load_base(cfg, base)
    encoder = TaskEncoder(Task(cfg.task), tokenizer, cfg.model.max_length)
    fingerprint = weights_fingerprint(model)
    clf, guard, meta = load_eco(artifact, model, tokenizer.pad_token_id, base)
    ecfg, ev = cfg.eco, cfg.evaluation
    cache = cfg.out / "cache" / "eval"
    preds = eco_dir(cfg) / "report" / "predictions"
    results: list[ModelResult] = []
    if include_base:
        results.append(evaluate_model(model, encoder, data, ev, name="Base (familiarized)" if cfg.finetune.enabled else "Base",
                                      identity=fingerprint, cache_dir=cache, predictions_dir=preds))
    flags = split_flags(clf, data, ev.splits)
    clf_id = sha256_text(repr(meta["classifier"]))[:12]
    eco_id = f"{fingerprint}:eco:{clf_id}:{sha256_text(repr(guard.corruption.params()))[:12]}"
    sigma = guard.corruption.sigma
    eco = evaluate_guarded(model, encoder, data, ev, guard, flags, name=f"ECO ({meta['corruption']['name']}, σ={sigma:.3g})",
                           identity=eco_id, cache_dir=cache, predictions_dir=preds)
    eco.info.update({"artifact": str(artifact), "classifier": meta["classifier"]["info"], "training": meta.get("training")})
    results.append(eco)
    if spul_artifact is not None and Path(spul_artifact).is_dir():
        peft_model, smeta = load_soft_prompt(model, spul_artifact, fingerprint, base)
        dtype = peft_model.get_input_embeddings().weight.dtype
        spul_id = fingerprint + ":" + sha256_text(repr(smeta.get("created")), repr(smeta.get("training")))[:16]
        p = smeta["hyperparameters"]["prompt_length"]
        results.append(evaluate_model(peft_model, encoder, data, ev, name=f"SPUL (p={p})", identity=spul_id,
                                      prompt_provider=lambda n, rows: (prompt_vectors(peft_model, n, dtype), None),
                                      cache_dir=cache, predictions_dir=preds))
        if ecfg.combined:
            combined = evaluate_combined(peft_model, encoder, data, ev, flags, name=f"SPUL (p={p}) on flagged prompts",
                                         identity=f"{spul_id}:flags:{clf_id}", cache_dir=cache, predictions_dir=preds)
            combined.info["spul_artifact"] = str(spul_artifact)
            results.append(combined)
    return results


def run_eco(cfg, data: UnlearningData | None = None, base: str | None = None) -> tuple[Path, ModelResult]:
    """One call for the Python API: train ECO against the base model and return (artifact, ECO result row)."""
    from spul.pipeline import finetune, prepare

    data = data or prepare(cfg)
    base = base or finetune(cfg, data)
    model, tokenizer = _load_base(cfg, base)
    artifact = train_eco(cfg, data, base, model, tokenizer)
    results = evaluate_eco(cfg, data, artifact, base, model=model, tokenizer=tokenizer, include_base=False)
    return artifact, results[0]
