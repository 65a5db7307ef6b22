"""The generative protocol (task kind ``qa`` or ``completion``): prepare → familiarise → retain-only reference →
unlearn → evaluate.

    output_dir/data/manifest.json      set sizes + content fingerprints
    output_dir/familiarized/model      LoRA fine-tune on forget + retain, merged (done.json: its input key)
    output_dir/retain_only/model       the same fine-tune on retain only: the "never saw it" reference
    output_dir/artifact                the method's artifact: SPUL's soft prompt, a LoRA adapter (weight methods)
                                       or ECO's classifier + σ, each with spul.json (servable, loadable)
    output_dir/report/                 results.md (TOFU-style table, or MUSE-style for passages), results.json,
                                       fq_vs_utility.png

QA data with a ``general`` set (``generated:authors``) trains on it as retain rows when ``general_retain`` is on:
the fine-tunes with its answers, the unlearning method with the familiarised model's own answers. Passage data
(``completion``) familiarises on the passages; SPUL trains the forget passages' openings and forget-knowledge
questions toward a refusal, the retain passages and retain-knowledge questions toward themselves.

Every step is keyed by its inputs (model, task, fine-tune settings, data fingerprints): a re-run reuses a
result only when the key matches, and changed inputs retrain.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from spul.configuration import dump_yaml, to_dict
from spul.data.generation import GenerationEncoder, build_generation_examples
from spul.data.generative_sources import GenerationData, load_generation_data
from spul.data.tasks import GenerationTask, GenerationTaskConfig, TaskKind
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


def qa_task(cfg: GenerationRunConfig) -> GenerationTask:
    """The qa task of a run: ``cfg.task`` itself, or for passage data the questions about the passages (KnowMem)."""
    if cfg.task.kind is TaskKind.QA:
        return GenerationTask(cfg.task)
    return GenerationTask(GenerationTaskConfig(kind=TaskKind.QA, chat_template=cfg.task.chat_template, system_prompt=cfg.task.system_prompt,
                                               refusals=list(cfg.task.refusals)))


def qa_encoder_for(cfg: GenerationRunConfig, tokenizer) -> GenerationEncoder:
    return GenerationEncoder(qa_task(cfg), tokenizer, cfg.model.max_length, cfg.max_answer_length)


def _model_config(cfg: GenerationRunConfig, name_or_path: str) -> ModelConfig:
    return ModelConfig(**{**to_dict(cfg.model), "name_or_path": name_or_path})


def _with_retain_rows(data: GenerationData, extra: pd.DataFrame) -> GenerationData:
    sets = dict(data.sets)
    sets["retain"] = pd.concat([data["retain"], extra], ignore_index=True)
    return GenerationData(data.kind, sets, source=data.source)


def uses_general(cfg: GenerationRunConfig, data: GenerationData) -> bool:
    return bool(cfg.general_retain) and data.kind is TaskKind.QA and "general" in data


def training_view(cfg: GenerationRunConfig, data: GenerationData) -> GenerationData:
    """What the fine-tunes train on: ``data`` whose retain set also holds the ``general`` rows (with their answers)."""
    return _with_retain_rows(data, data["general"]) if uses_general(cfg, data) else data


def base_answers(cfg: GenerationRunConfig, data: GenerationData, name: str, model, tokenizer, identity: str) -> list[str]:
    """The model's own greedy answers to set ``name`` (cached under ``OUTPUT/cache`` by the model identity and the rows)."""
    from spul.models.generation import DecodingConfig, generate_ids

    encoder = encoder_for(cfg, tokenizer)
    questions = data[name]["question"].astype(str).tolist()
    path = cfg.out / "cache" / f"own-answers-{_key(identity, data.fingerprint(name), cfg.max_answer_length, to_dict(cfg.task))}.json"
    if path.is_file():
        try:
            stored = read_json(path)["answers"]
            if len(stored) == len(questions):
                return stored
        except (ValueError, KeyError, TypeError):
            pass  # a damaged entry is recomputed
    decoding = DecodingConfig(max_new_tokens=cfg.max_answer_length - 1, batch_size=cfg.evaluation.batch_size)
    ids = generate_ids(model, [encoder.encode_prompt(q) for q in questions], pad_id=encoder.pad_id, eos_id=tokenizer.eos_token_id,
                       decoding=decoding)
    texts = [encoder.decode(row) for row in ids]
    # an empty answer cannot be trained on: the row keeps its own answer
    answers = [t if t.strip() else a for t, a in zip(texts, data[name]["answer"].astype(str))]
    write_json(path, {"identity": identity, "answers": answers})
    return answers


def unlearning_view(cfg: GenerationRunConfig, data: GenerationData, model, tokenizer) -> GenerationData:
    """What the unlearning method trains on: ``data`` whose retain set also holds the ``general`` questions answered by
    the familiarised ``model`` itself (so the retain loss and SPUL's KL keep its behaviour on them)."""
    if not uses_general(cfg, data):
        return data
    from spul.models.loading import weights_fingerprint

    general = data["general"].copy()
    general["answer"] = base_answers(cfg, data, "general", model, tokenizer, weights_fingerprint(model))
    return _with_retain_rows(data, general)


def training_examples(cfg: GenerationRunConfig, data: GenerationData, encoder: GenerationEncoder, forget_target: str, seed: int,
                      include_retain: bool = True) -> list:
    """Training examples of an unlearning method. QA: ``build_generation_examples``. Passages with a refusal target:
    the openings of every forget passage (its verbmem prompt and cuts every 8 words) and the forget-knowledge questions
    → a refusal; the retain passages (LM windows) and retain-knowledge questions → themselves."""
    if data.kind is TaskKind.QA or forget_target != "refusal":
        return build_generation_examples(data, encoder, forget_target=forget_target, seed=seed, include_retain=include_retain)
    import numpy as np

    from spul.data.generation import passage_examples

    refusals = cfg.task.refusals
    rng = np.random.default_rng(seed)
    prefixes = []
    for text in data["forget"]["text"].astype(str):
        words = text.split(" ")
        prefixes += [" ".join(words[:n]) for n in range(8, len(words), 8)]
    if "verbmem_forget" in data:
        prefixes += data["verbmem_forget"]["prompt"].astype(str).tolist()
    prefixes = list(dict.fromkeys(prefixes))
    examples = encoder.encode(prefixes, [refusals[int(k)] for k in rng.integers(0, len(refusals), size=len(prefixes))], is_forget=True)
    qa = qa_encoder_for(cfg, encoder.tokenizer)
    if "knowmem_forget" in data:
        questions = data["knowmem_forget"]["question"].astype(str).tolist()
        examples += qa.encode(questions, [refusals[int(k)] for k in rng.integers(0, len(refusals), size=len(questions))], is_forget=True)
    if include_retain:
        examples += passage_examples(encoder.tokenizer, data["retain"]["text"].astype(str).tolist(), encoder.max_length)
        if "knowmem_retain" in data:
            df = data["knowmem_retain"]
            examples += qa.encode(df["question"].astype(str).tolist(), df["answer"].astype(str).tolist())
    return examples


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
    data = training_view(cfg, data)
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


def unlearn(cfg: GenerationRunConfig, data: GenerationData, base: str, resume: bool = True, model_and_tokenizer=None,
            retain_only: str | Path | None = None) -> Path:
    """The configured method on generative examples against the familiarised model; its artifact (a soft prompt,
    a LoRA adapter or ECO's classifier + σ, each with ``spul.json``) in ``OUTPUT/artifact``. ``retain_only``: the
    retain-only model folder ECO's σ search aims at (default ``OUTPUT/retain_only/model``)."""
    if cfg.method == "eco":
        return unlearn_eco(cfg, data, base, resume, model_and_tokenizer, retain_only)
    if cfg.method != "spul":
        return unlearn_weights(cfg, data, base, resume, model_and_tokenizer)
    from spul import resume as resume_keys
    from spul.artifacts import base_model_record
    from spul.methods.generation.train import train_spul_generative
    from spul.models.loading import load_model, weights_fingerprint

    model, tokenizer = model_and_tokenizer or load_model(_model_config(cfg, base))
    fingerprint = weights_fingerprint(model)
    encoder = encoder_for(cfg, tokenizer)
    examples = training_examples(cfg, data, encoder, "refusal", cfg.unlearn.seed)
    inputs = {"base_fingerprint": fingerprint, "model": {k: v for k, v in to_dict(cfg.model).items() if k != "name_or_path"},
              "task": to_dict(cfg.task), "max_answer_length": cfg.max_answer_length,
              "data": {s: data.fingerprint(s) for s in data.sets if s in ("forget", "retain", "verbmem_forget", "knowmem_forget", "knowmem_retain")},
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


def unlearn_eco(cfg: GenerationRunConfig, data: GenerationData, base: str, resume: bool = True, model_and_tokenizer=None,
                retain_only: str | Path | None = None) -> Path:
    """ECO: classifier on forget vs retain questions, σ toward the retain-only model (``retain_only``, a model
    folder stamped by ``train_reference``; default ``OUTPUT/retain_only/model``)."""
    from spul.methods.generation.eco import train_eco_generative
    from spul.models.loading import load_model, weights_fingerprint

    model, tokenizer = model_and_tokenizer or load_model(_model_config(cfg, base))
    inputs = _method_inputs(cfg, data, weights_fingerprint(model))
    reference = None
    folder = Path(retain_only) if retain_only is not None else cfg.out / "retain_only" / "model"
    stamp = folder.parent / "done.json"
    if stamp.is_file():
        inputs["retain_only"] = read_json(stamp).get("key")

        def reference():  # loaded only when the σ search runs (not when the artifact is up to date)
            return load_model(_model_config(cfg, str(folder)))[0]
    return train_eco_generative(model, tokenizer, encoder_for(cfg, tokenizer), data, cfg.unlearn, reference, cfg.out / "artifact",
                                inputs, _artifact_meta(cfg, data, base, tokenizer), resume=resume)


def evaluation_config(cfg: GenerationRunConfig):
    from spul.evaluation.generation_metrics import GenerationEvalConfig
    from spul.models.generation import DecodingConfig

    ev = cfg.evaluation
    return GenerationEvalConfig(batch_size=ev.batch_size, decoding=DecodingConfig(max_new_tokens=ev.max_new_tokens, batch_size=ev.batch_size),
                                max_length=cfg.model.max_length, max_answer_length=cfg.max_answer_length)


@contextlib.contextmanager
def _whole_batch(intervention, model):
    """Passages are scored without per-row hooks: a soft prompt goes in as ``soft_prompt`` (yielded), an ungated weight
    delta is applied around the whole evaluation; a gated intervention (ECO) is refused with the reason."""
    from spul.errors import ConfigError

    if intervention is None or intervention.vectors is not None:
        yield None if intervention is None else intervention.vectors
        return
    if getattr(intervention, "classifier", None) is not None:
        raise ConfigError(f"{intervention.name!r} is gated by a classifier, which the passage evaluation does not apply per row",
                          "evaluate gated methods (ECO) on qa data, or use a soft prompt or weight method on passages")
    with intervention.applied(model, [], []):  # never told which rows: it applies to every row
        yield None


def evaluate_state(cfg: GenerationRunConfig, data: GenerationData, model, tokenizer, identity: str, soft_prompt=None,
                   base_model=None, cache_dir: str | Path | None = None, intervention=None) -> dict[str, dict[str, list]]:
    """Per-example records of every evaluated set for one model state (cached under ``OUTPUT/cache/eval``).

    QA: ``evaluate_qa_set`` on ``evaluation.sets``. Passages: ``evaluate_passages`` (VerbMem, KnowMem, Min-K%++ of
    forget and holdout passages) plus ``fluency``: the perplexity of each forget continuation under ``base_model``
    (the familiarised model; not cached, a few rows). ``intervention`` (any method's loaded artifact) is applied to
    every pass: per row on QA (a gate sees each batch's rows); on passages a soft prompt or an ungated weight delta."""
    from spul.evaluation.generation_metrics import evaluate_passages, evaluate_qa_set, output_perplexities

    ecfg = evaluation_config(cfg)
    cache = Path(cache_dir) if cache_dir is not None else cfg.out / "cache" / "eval"
    if data.kind is TaskKind.COMPLETION:
        with _whole_batch(intervention, model) as vectors:
            records = evaluate_passages(model, tokenizer, data, identity=identity, cfg=ecfg, qa_task=qa_task(cfg),
                                        soft_prompt=vectors if vectors is not None else soft_prompt, cache_dir=cache)
        if base_model is not None and "verbmem_forget" in records:
            prompts = data["verbmem_forget"]["prompt"].astype(str).tolist()
            records["fluency"] = {"output_perplexity": output_perplexities(base_model, encoder_for(cfg, tokenizer), prompts,
                                                                           records["verbmem_forget"]["generation"], cfg.evaluation.batch_size)}
        return records
    encoder = encoder_for(cfg, tokenizer)
    return {name: evaluate_qa_set(model, encoder, data, name, identity=identity, cfg=ecfg, soft_prompt=soft_prompt, cache_dir=cache,
                                  intervention=intervention)
            for name in cfg.evaluation.sets if name in data}


def summarise_state(data: GenerationData, records: dict[str, dict[str, list]], reference: dict[str, dict[str, list]] | None) -> dict[str, Any]:
    """One report row's numbers: TOFU's (forget quality against ``reference``, the retain-only model's records; model
    utility; ROUGE-L) for QA, MUSE's (VerbMem, KnowMem, AUC, PrivLeak; fluency) for passages."""
    import numpy as np

    from spul.evaluation.generation_metrics import passages_summary, tofu_summary

    if data.kind is not TaskKind.COMPLETION:
        return tofu_summary(records, reference["forget"] if reference is not None else None)
    row: dict[str, Any] = passages_summary(records, reference)
    if "verbmem_forget" in records:
        row["unique_token_ratio"] = float(np.mean(records["verbmem_forget"]["unique_token_ratio"]))
    if "fluency" in records:  # NaN when every continuation is empty (nothing to score)
        ppl = [v for v in records["fluency"]["output_perplexity"] if v == v]
        row["output_perplexity"] = float(np.mean(ppl)) if ppl else float("nan")
    return row


def example_rows(data: GenerationData, records: dict[str, dict[str, list]], n: int = 3) -> list[dict[str, str]]:
    """The first ``n`` generations of the forget and retain (or VerbMem / KnowMem) sets, for the report."""
    names = ("verbmem_forget", "knowmem_forget", "knowmem_retain") if data.kind is TaskKind.COMPLETION else ("forget", "retain")
    out = []
    for name in names:
        if name in records and "generation" in records[name]:
            column = "prompt" if name.startswith("verbmem") else "question"
            for q, g in zip(data[name][column].astype(str).tolist()[:n], records[name]["generation"][:n]):
                out.append({"set": name, "question": q, "generation": g})
    return out


def reference_records(cfg: GenerationRunConfig, data: GenerationData, base: str, retain_only: str | None, base_model_and_tokenizer,
                      cache_dir: str | Path | None = None) -> list[tuple[str, dict[str, dict[str, list]]]]:
    """``[("Base (familiarized)", records), ("Retain-only (reference)", records)]`` (the second only with a
    retain-only model)."""
    from spul.models.loading import load_model, weights_fingerprint

    model, tokenizer = base_model_and_tokenizer
    states = [("Base (familiarized)", evaluate_state(cfg, data, model, tokenizer, weights_fingerprint(model), base_model=model,
                                                     cache_dir=cache_dir))]
    if retain_only:
        ref_model, ref_tok = load_model(_model_config(cfg, retain_only))
        states.append(("Retain-only (reference)", evaluate_state(cfg, data, ref_model, ref_tok, weights_fingerprint(ref_model),
                                                                 base_model=model, cache_dir=cache_dir)))
        del ref_model
    return states


def artifact_records(cfg: GenerationRunConfig, data: GenerationData, base: str, artifact: str | Path, base_model_and_tokenizer,
                     cache_dir: str | Path | None = None, name: str | None = None) -> tuple[str, dict[str, dict[str, list]]]:
    """The records of the base model with an unlearning result applied: any method's artifact (``spul.json``),
    loaded as its intervention (a soft prompt, a LoRA delta, ECO's gated corruption) on the frozen base."""
    from spul.methods.registry import load_intervention
    from spul.models.loading import weights_fingerprint

    model, tokenizer = base_model_and_tokenizer
    fingerprint = weights_fingerprint(model)
    iv = load_intervention(artifact, model, tokenizer=tokenizer, fingerprint=fingerprint, model_name=base)
    records = evaluate_state(cfg, data, model, tokenizer, f"{fingerprint}:{iv.identity}", base_model=model, cache_dir=cache_dir,
                             intervention=iv)
    return name or iv.name, records


def build_rows(data: GenerationData, states: list[tuple[str, dict[str, dict[str, list]]]], reference: dict[str, dict[str, list]] | None
               ) -> list[dict[str, Any]]:
    return [{"method": name, **summarise_state(data, records, reference), "examples": example_rows(data, records)} for name, records in states]


def write_report(cfg: GenerationRunConfig, data: GenerationData, rows: list[dict[str, Any]], folder: str | Path,
                 title: str | None = None, extra: dict[str, Any] | None = None) -> Path:
    """``results.json`` + ``results.md`` (TOFU-style table and the per-set table for QA, MUSE-style for passages) and,
    for QA with forget quality, ``fq_vs_utility.png``; returns the Markdown file."""
    from spul.evaluation.generation_metrics import passages_table, plot_forget_quality_vs_utility, write_generation_report

    folder = Path(folder)
    if data.kind is TaskKind.COMPLETION:
        write_json(folder / "results.json", {"rows": rows, **(extra or {})})
        md = (f"# {title or 'Generative unlearning of passages (MUSE-style)'}\n\n{PASSAGES_NOTE}\n\n{passages_table(rows)}\n")
        return write_text(folder / "results.md", md)
    _, md_path = write_generation_report(rows, folder, title=title or "Generative unlearning (TOFU-style)", extra=extra)
    write_text(md_path, md_path.read_text(encoding="utf-8") + "\n## Per set\n\n" + detail_table(rows) + "\n")
    if cfg.evaluation.plot and any(r.get("forget_quality") is not None for r in rows):
        plot_forget_quality_vs_utility(rows, folder / "fq_vs_utility.png")
    return md_path


PASSAGES_NOTE = ("VerbMem: ROUGE-L F1 of greedy continuations of the forget passages' openings against the true continuation. "
                 "KnowMem: ROUGE-L F1 of answers to questions about the forget / retain passages. AUC: Min-K%++ scores of forget "
                 "vs holdout passages; PrivLeak = (AUC - AUC of the retain-only model) / AUC of the retain-only model (0 = like a "
                 "model that never saw the forget passages). Fluency: unique-token ratio of the continuations and their perplexity "
                 "under the familiarised model.")


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
    """Rows of the report: the familiarised base, the retain-only reference and base + the unlearning result."""
    from spul.models.loading import load_model

    base_model = load_model(_model_config(cfg, base))
    states = reference_records(cfg, data, base, retain_only, base_model)
    reference = states[1][1] if retain_only else None
    if artifact is not None:
        states.append(artifact_records(cfg, data, base, artifact, base_model))
    rows = build_rows(data, states, reference)
    write_report(cfg, data, rows, cfg.out / "report", extra={"config": to_dict(cfg), **(extra or {})})
    log.info("\n%s", summary(rows))
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
    artifact = unlearn(cfg, unlearning_view(cfg, data, *model_and_tokenizer), base, resume, model_and_tokenizer)
    timings["unlearn"] = time.time() - t
    write_text(cfg.out / "config.yaml", dump_yaml(cfg))
    t = time.time()
    rows = evaluate(cfg, data, base, reference, artifact, extra={"timings": timings})
    timings["evaluate"] = time.time() - t
    write_json(cfg.out / "timings.json", {k: round(v, 1) for k, v in timings.items()})
    return rows


def summary(rows: list[dict[str, Any]]) -> str:
    from spul.evaluation.generation_metrics import passages_table, tofu_table

    if rows and "sets" not in rows[0]:  # passages
        return passages_table(rows)
    return tofu_table(rows) + "\n\n" + detail_table(rows)
