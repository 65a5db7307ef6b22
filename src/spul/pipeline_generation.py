"""The generative protocol (task kind ``qa``): prepare → familiarise → retain-only reference → unlearn → evaluate.

    output_dir/data/manifest.json      set sizes + content fingerprints
    output_dir/familiarized/model      LoRA fine-tune on forget + retain, merged (done.json: its input key)
    output_dir/retain_only/model       the same fine-tune on retain only: the "never saw it" reference
    output_dir/artifact                the method's artifact: SPUL's soft prompt, a LoRA adapter (weight methods)
                                       or ECO's classifier + σ, each with spul.json (servable, loadable)
    output_dir/report/                 results.md (TOFU-style table), results.json, fq_vs_utility.png

Every step is keyed by its inputs (model, task, fine-tune settings, data fingerprints): a re-run reuses a
result only when the key matches, and changed inputs retrain.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from spul.configuration import dump_yaml, to_dict
from spul.data.generation import GenerationEncoder, build_generation_examples
from spul.data.generative_sources import GenerationData, load_generation_data
from spul.data.tasks import GenerationTask
from spul.io import read_json, sha256_text, write_json, write_text
from spul.models.config import ModelConfig
from spul.run_config_generation import GenerationRunConfig

log = logging.getLogger(__name__)

REFERENCES = {"familiarized": True, "retain_only": False}  # folder -> trained on the forget set too


def prepare(cfg: GenerationRunConfig) -> GenerationData:
    data = load_generation_data(cfg.data)
    write_json(cfg.out / "data" / "manifest.json", {"source": data.source, "sizes": data.sizes(), "fingerprints": data.fingerprints(),
                                                    "config": to_dict(cfg.data)})
    return data


def _key(*parts: Any) -> str:
    return sha256_text(*(repr(p) for p in parts))[:16]


def encoder_for(cfg: GenerationRunConfig, tokenizer) -> GenerationEncoder:
    return GenerationEncoder(GenerationTask(cfg.task), tokenizer, cfg.model.max_length, cfg.max_answer_length)


def _model_config(cfg: GenerationRunConfig, name_or_path: str) -> ModelConfig:
    return ModelConfig(**{**to_dict(cfg.model), "name_or_path": name_or_path})


def reference_inputs(cfg: GenerationRunConfig, data: GenerationData, with_forget: bool) -> dict[str, Any]:
    """What decides a reference model: the stamp key of its folder and the resume key of its checkpoints."""
    from spul import resume as resume_keys
    from spul.methods.config import TRACKING_FIELDS

    settings = {k: v for k, v in to_dict(cfg.finetune).items() if k not in TRACKING_FIELDS}
    sets = ["forget", "retain"] if with_forget else ["retain"]
    return {"model": to_dict(cfg.model), "task": to_dict(cfg.task), "max_answer_length": cfg.max_answer_length,
            "data": {s: data.fingerprint(s) for s in sets}, "finetune": resume_keys.result_settings(settings)}


def train_reference(cfg: GenerationRunConfig, data: GenerationData, name: str, resume: bool = True) -> str:
    """``familiarized`` (forget + retain) or ``retain_only`` (retain only): a cached, fingerprinted LoRA fine-tune.

    ``OUTPUT/<name>/done.json`` records the input key, the weights fingerprint and the time; the merged model is
    reused only when the key matches and the folder is there.
    """
    from spul import resume as resume_keys
    from spul.methods.generation.train import finetune_generative
    from spul.models.loading import load_tokenizer

    with_forget = REFERENCES[name]
    folder = cfg.out / name
    inputs = reference_inputs(cfg, data, with_forget)
    key = resume_keys.resume_key(inputs)
    stamp = folder / "done.json"
    if stamp.is_file() and read_json(stamp).get("key") == key and (folder / "model").is_dir():
        log.info("%s model is up to date: %s", name, folder / "model")
        return str(folder / "model")
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    examples = build_generation_examples(data, encoder_for(cfg, tokenizer), forget_target="true", seed=cfg.finetune.seed,
                                         include_forget=with_forget)
    resuming = resume_keys.prepare_checkpoints(folder / "checkpoints", inputs, resume, f"{name} fine-tune")
    started = time.time()
    path, fingerprint = finetune_generative(cfg.model, examples, cfg.finetune, folder, resume=resuming)
    write_json(stamp, {"key": key, "path": str(path), "examples": len(examples), "with_forget": with_forget,
                       "fingerprint": fingerprint, "seconds": round(time.time() - started, 1)})
    # the stamped model is the result: its checkpoints would only block a later run with other settings
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    return str(path)


def unlearn(cfg: GenerationRunConfig, data: GenerationData, base: str, resume: bool = True, model_and_tokenizer=None) -> Path:
    """The configured method on generative examples against the familiarised model; its artifact (a soft prompt,
    a LoRA adapter or ECO's classifier + σ, each with ``spul.json``) in ``OUTPUT/artifact``."""
    if cfg.method == "eco":
        return unlearn_eco(cfg, data, base, resume, model_and_tokenizer)
    if cfg.method != "spul":
        return unlearn_weights(cfg, data, base, resume, model_and_tokenizer)
    from spul import resume as resume_keys
    from spul.artifacts import base_model_record
    from spul.methods.generation.train import train_spul_generative
    from spul.models.loading import load_model, weights_fingerprint

    model, tokenizer = model_and_tokenizer or load_model(_model_config(cfg, base))
    fingerprint = weights_fingerprint(model)
    encoder = encoder_for(cfg, tokenizer)
    examples = build_generation_examples(data, encoder, forget_target="refusal", seed=cfg.unlearn.seed)
    inputs = {"base_fingerprint": fingerprint, "model": {k: v for k, v in to_dict(cfg.model).items() if k != "name_or_path"},
              "task": to_dict(cfg.task), "max_answer_length": cfg.max_answer_length,
              "data": {s: data.fingerprint(s) for s in ("forget", "retain")},
              "unlearn": resume_keys.result_settings(to_dict(cfg.unlearn))}
    meta = {**base_model_record(base, cfg.model.name_or_path, cfg.out / "familiarized"), "base_fingerprint": fingerprint,
            "tokenizer": getattr(tokenizer, "name_or_path", ""), "generation_task": to_dict(cfg.task),
            "max_length": cfg.model.max_length, "max_answer_length": cfg.max_answer_length,
            "data": {"source": data.source, "sizes": data.sizes(), "fingerprints": data.fingerprints()}}
    return train_spul_generative(_model_config(cfg, base), examples, cfg.unlearn, cfg.out / "artifact", cfg.out / "unlearn",
                                 inputs, meta, resume=resume, model_and_tokenizer=(model, tokenizer))


def _method_inputs(cfg: GenerationRunConfig, data: GenerationData, fingerprint: str) -> dict[str, Any]:
    """What decides a method's artifact (its resume key)."""
    from spul import resume as resume_keys

    return {"base_fingerprint": fingerprint, "model": {k: v for k, v in to_dict(cfg.model).items() if k != "name_or_path"},
            "task": to_dict(cfg.task), "max_answer_length": cfg.max_answer_length,
            "data": {s: data.fingerprint(s) for s in ("forget", "retain")},
            "unlearn": resume_keys.result_settings(to_dict(cfg.unlearn))}


def _artifact_meta(cfg: GenerationRunConfig, data: GenerationData, base: str, tokenizer) -> dict[str, Any]:
    from spul.artifacts import base_model_record

    return {**base_model_record(base, cfg.model.name_or_path, cfg.out / "familiarized"),
            "tokenizer": getattr(tokenizer, "name_or_path", ""), "generation_task": to_dict(cfg.task),
            "max_length": cfg.model.max_length, "max_answer_length": cfg.max_answer_length,
            "data": {"source": data.source, "sizes": data.sizes(), "fingerprints": data.fingerprints()}}


def unlearn_weights(cfg: GenerationRunConfig, data: GenerationData, base: str, resume: bool = True, model_and_tokenizer=None) -> Path:
    """GA / GA+KL / GA+GD / RL / NPO / SimNPO / IDK-DPO / RMU with LoRA on generative examples → a LoRA artifact in
    ``OUTPUT/artifact`` (loaded as a ``LoraDelta``), reused when its inputs are unchanged."""
    from spul.methods.generation.weights import train_weights_generative
    from spul.models.loading import load_model, weights_fingerprint

    model, tokenizer = model_and_tokenizer or load_model(_model_config(cfg, base))
    inputs = _method_inputs(cfg, data, weights_fingerprint(model))
    return train_weights_generative(_model_config(cfg, base), cfg.method, data, lambda tok: encoder_for(cfg, tok), cfg.unlearn,
                                    cfg.out / "artifact", inputs, _artifact_meta(cfg, data, base, tokenizer), resume=resume,
                                    model_and_tokenizer=(model, tokenizer))


def unlearn_eco(cfg: GenerationRunConfig, data: GenerationData, base: str, resume: bool = True, model_and_tokenizer=None) -> Path:
    """ECO: classifier on forget vs retain questions, σ toward the retain-only model (``OUTPUT/retain_only``)."""
    from spul.methods.generation.eco import train_eco_generative
    from spul.models.loading import load_model, weights_fingerprint

    model, tokenizer = model_and_tokenizer or load_model(_model_config(cfg, base))
    inputs = _method_inputs(cfg, data, weights_fingerprint(model))
    reference = None
    stamp = cfg.out / "retain_only" / "done.json"
    if stamp.is_file():
        inputs["retain_only"] = read_json(stamp).get("key")

        def reference():  # loaded only when the σ search runs (not when the artifact is up to date)
            return load_model(_model_config(cfg, str(cfg.out / "retain_only" / "model")))[0]
    return train_eco_generative(model, tokenizer, encoder_for(cfg, tokenizer), data, cfg.unlearn, reference, cfg.out / "artifact",
                                inputs, _artifact_meta(cfg, data, base, tokenizer), resume=resume)


def evaluation_config(cfg: GenerationRunConfig):
    from spul.evaluation.generation_metrics import GenerationEvalConfig
    from spul.models.generation import DecodingConfig

    ev = cfg.evaluation
    return GenerationEvalConfig(batch_size=ev.batch_size, decoding=DecodingConfig(max_new_tokens=ev.max_new_tokens, batch_size=ev.batch_size),
                                max_length=cfg.model.max_length, max_answer_length=cfg.max_answer_length)


def evaluate_state(cfg: GenerationRunConfig, data: GenerationData, model, tokenizer, identity: str, soft_prompt=None,
                   intervention=None) -> dict[str, dict[str, list]]:
    """Per-example records of every evaluated set for one model state (cached under ``OUTPUT/cache/eval``)."""
    from spul.evaluation.generation_metrics import evaluate_qa_set

    encoder = encoder_for(cfg, tokenizer)
    ecfg = evaluation_config(cfg)
    return {name: evaluate_qa_set(model, encoder, data, name, identity=identity, cfg=ecfg, soft_prompt=soft_prompt,
                                  cache_dir=cfg.out / "cache" / "eval", intervention=intervention)
            for name in cfg.evaluation.sets if name in data}


DETAIL_COLUMNS = (("forget", "rouge_l_recall", "ROUGE-L forget"), ("forget", "probability", "P forget"),
                  ("forget", "truth_ratio", "TR forget"), ("forget", "fact_recall", "fact recall forget"),
                  ("retain", "rouge_l_recall", "ROUGE-L retain"), ("retain", "probability", "P retain"),
                  ("retain", "truth_ratio", "TR retain"), ("retain", "fact_recall", "fact recall retain"),
                  ("world_facts", "rouge_l_recall", "ROUGE-L world"))


def detail_table(rows: list[dict[str, Any]]) -> str:
    """Per-set numbers of every row: ROUGE-L recall, probability, truth-ratio score, fact recall."""
    present = [(s, m, t) for s, m, t in DETAIL_COLUMNS if any(m in r.get("sets", {}).get(s, {}) for r in rows)]
    lines = ["| Model | " + " | ".join(t for _, _, t in present) + " |", "|---|" + "---:|" * len(present)]
    for r in rows:
        cells = [f"{r['sets'][s][m]:.3f}" if m in r.get("sets", {}).get(s, {}) else "–" for s, m, _ in present]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate(cfg: GenerationRunConfig, data: GenerationData, base: str, retain_only: str | None, artifact: str | Path | None,
             extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows of the TOFU-style table: the familiarised base, the retain-only reference and base + the artifact."""
    from spul.evaluation.generation_metrics import plot_forget_quality_vs_utility, tofu_summary, tofu_table, write_generation_report
    from spul.methods.registry import load_intervention
    from spul.models.loading import load_model, weights_fingerprint

    states: list[tuple[str, dict[str, dict[str, list]]]] = []
    reference_forget = None
    if retain_only:
        ref_model, ref_tok = load_model(_model_config(cfg, retain_only))
        records = evaluate_state(cfg, data, ref_model, ref_tok, weights_fingerprint(ref_model))
        reference_forget = records["forget"]
        states.append(("Retain-only (reference)", records))
        del ref_model
    model, tokenizer = load_model(_model_config(cfg, base))
    fingerprint = weights_fingerprint(model)
    states.insert(0, ("Base (familiarized)", evaluate_state(cfg, data, model, tokenizer, fingerprint)))
    if artifact is not None:  # any method's artifact, applied to the frozen base as its intervention
        iv = load_intervention(artifact, model, tokenizer=tokenizer, fingerprint=fingerprint, model_name=base)
        states.append((iv.name, evaluate_state(cfg, data, model, tokenizer, f"{fingerprint}:{iv.identity}", intervention=iv)))
    rows = []
    for name, records in states:
        summary = tofu_summary(records, reference_forget)
        rows.append({"method": name, **summary,
                     "examples": [{"set": s, "question": q, "generation": g}
                                  for s in ("forget", "retain") if s in records
                                  for q, g in zip(data[s]["question"].tolist()[:3], records[s]["generation"][:3])]})
    report = cfg.out / "report"
    write_generation_report(rows, report, title="Generative unlearning (TOFU-style)", extra={"config": to_dict(cfg), **(extra or {})})
    md = (report / "results.md").read_text(encoding="utf-8")
    write_text(report / "results.md", md + "\n## Per set\n\n" + detail_table(rows) + "\n")
    if cfg.evaluation.plot and reference_forget is not None:
        plot_forget_quality_vs_utility(rows, report / "fq_vs_utility.png")
    log.info("\n%s", tofu_table(rows))
    return rows


def run(cfg: GenerationRunConfig, resume: bool = True) -> list[dict[str, Any]]:
    """prepare → familiarise → retain-only → unlearn → evaluate, each step reused when its inputs are unchanged."""
    from spul.models.loading import load_model

    cfg.out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.time()
    data = prepare(cfg)
    timings["prepare"] = time.time() - t
    t = time.time()
    base = train_reference(cfg, data, "familiarized", resume)
    timings["familiarize"] = time.time() - t
    reference = None
    if cfg.retain_only:
        t = time.time()
        reference = train_reference(cfg, data, "retain_only", resume)
        timings["retain_only"] = time.time() - t
    t = time.time()
    model_and_tokenizer = load_model(_model_config(cfg, base))
    artifact = unlearn(cfg, data, base, resume, model_and_tokenizer)
    timings["unlearn"] = time.time() - t
    write_text(cfg.out / "config.yaml", dump_yaml(cfg))
    t = time.time()
    rows = evaluate(cfg, data, base, reference, artifact, extra={"timings": timings})
    timings["evaluate"] = time.time() - t
    write_json(cfg.out / "timings.json", {k: round(v, 1) for k, v in timings.items()})
    return rows


def summary(rows: list[dict[str, Any]]) -> str:
    from spul.evaluation.generation_metrics import tofu_table

    return tofu_table(rows) + "\n\n" + detail_table(rows)
