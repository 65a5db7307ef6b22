"""``spul audit`` on a generative (qa) artifact: does the forgetting survive re-asked questions, and does the model
still betray the forget set to a membership-inference attacker?

* **query families** (ROUGE-L recall of the greedy answer against the true one, forget and retain, with and without
  the artifact): ``original`` questions; ``paraphrased`` (the data's ``paraphrased_question`` column where it has one,
  TOFU-style, else a rule-based rewrite from the attack suite's held-out paraphrase pool, ``data/attacks.py``);
  ``injection_prefix`` / ``injection_suffix`` (an instruction from the suite's held-out injection pool put before /
  after the question). A row's rewrite is chosen from the pool by (seed, question), the same every run.
* **membership inference**: forget rows (members) against a set the models never trained on (``holdout`` where the
  data has one, else ``world_facts``), scored on the answer tokens after each question: loss (−mean NLL) and
  Min-K%++ (mean of the lowest k % token scores). AUC without / with the artifact, and the retain-only model's
  AUC ("never saw it", ``OUTPUT/retain_only/model`` when the run trained it) with MUSE's PrivLeak against it: the
  reference absorbs the gap that only comes from the two sets being different kinds of questions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spul.configuration import to_dict
from spul.data.attacks import AttackSuite
from spul.data.generation import GenerationEncoder
from spul.data.generative_sources import load_generation_data
from spul.data.tasks import GenerationTask
from spul.errors import ConfigError, DataError
from spul.evaluation.generation_metrics import (
    _lowest_mean,
    example_token_nlls,
    membership_auc,
    priv_leak,
    rouge_l_recall,
    under_intervention,
)
from spul.io import write_json, write_text
from spul.models.generation import DecodingConfig, generate_ids

FAMILIES = ("original", "paraphrased", "injection_prefix", "injection_suffix")
MIA_SCORES = ("loss", "min_k_pp")


@dataclass
class GenerationAuditConfig:
    """What the generative audit measures (``audit.KEY=VALUE`` or an ``audit:`` section)."""

    limit: int = field(default=32, metadata={"help": "rows per set (a seeded sample)"})
    batch_size: int = field(default=16, metadata={"help": "rows per forward pass / generate call"})
    max_new_tokens: int = field(default=32, metadata={"help": "token limit of each generated answer"})
    families: list[str] = field(default_factory=lambda: list(FAMILIES), metadata={"help": "query families: " + ", ".join(FAMILIES)})
    membership: bool = field(default=True, metadata={"help": "run the membership-inference attack"})
    nonmember_set: str | None = field(default=None, metadata={"help": "non-member set of the MIA (default: holdout, else world_facts)"})
    min_k: float = field(default=0.2, metadata={"help": "fraction k of the lowest Min-K%++ token scores"})
    seed: int = field(default=0, metadata={"help": "seed of the row sample and of the rewrites chosen per row"})

    def __post_init__(self) -> None:
        if self.limit < 2:
            raise ConfigError(f"audit.limit={self.limit} is too small", "use at least 2 rows per set (32 is typical)")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ConfigError("audit.batch_size and audit.max_new_tokens must be at least 1", "use e.g. 16 and 32")
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise ConfigError(f"audit.families has unknown families {unknown}", f"use some of: {', '.join(FAMILIES)}")
        if not 0 < self.min_k <= 1:
            raise ConfigError(f"audit.min_k={self.min_k} is out of range", "use a fraction in (0, 1], e.g. 0.2")


def rewrite_questions(family: str, questions: list[str], suite: AttackSuite, paraphrased: list[str] | None = None) -> list[str]:
    """The questions as family ``family`` asks them (held-out pools only: nothing the artifact could have trained on)."""
    if family == "original":
        return list(questions)
    if family == "paraphrased":
        if paraphrased is not None:
            return list(paraphrased)
        return [suite.apply(suite.pick("paraphrase", "heldout", q), q, "")[0] for q in questions]
    if family in ("injection_prefix", "injection_suffix"):
        position = family.split("_", 1)[1]
        pool = [a for a in suite.pool("injection", "heldout") if a.kind == position]
        return [suite.apply(pool[_pick(suite.seed, family, q, len(pool))], q, "")[0] for q in questions]
    raise ConfigError(f"unknown audit family {family!r}", f"use some of: {', '.join(FAMILIES)}")


def _pick(seed: int, family: str, text: str, n: int) -> int:
    import zlib

    return zlib.crc32(f"{seed}\x1f{family}\x1f{text}".encode()) % n


def generated_rouge(model, encoder: GenerationEncoder, questions: list[str], answers: list[str], intervention, decoding: DecodingConfig) -> list[float]:
    """ROUGE-L recall of each greedy answer (under ``intervention``, None = the model as it is) against ``answers``."""
    prompts = [encoder.encode_prompt(q) for q in questions]
    ids = under_intervention(intervention, model, questions, prompts, lambda hook: generate_ids(
        model, prompts, pad_id=encoder.pad_id, eos_id=encoder.tokenizer.eos_token_id, decoding=decoding,
        soft_prompt=None if intervention is None else intervention.vectors, row_hook=hook))
    return [rouge_l_recall(encoder.decode(r), a) for r, a in zip(ids, answers)]


def membership_scores(model, encoder: GenerationEncoder, questions: list[str], answers: list[str], intervention, batch_size: int,
                      k: float) -> dict[str, np.ndarray]:
    """Per row, higher = more member-like: ``loss`` (−mean answer NLL) and ``min_k_pp`` (lowest-k mean Min-K%++)."""
    examples = encoder.encode(questions, answers)
    nll, mink = under_intervention(intervention, model, questions, [e.prompt_ids for e in examples], lambda hook: example_token_nlls(
        model, examples, encoder.pad_id, batch_size, None if intervention is None else intervention.vectors, with_min_k=True, row_hook=hook))
    return {"loss": np.array([-float(n.mean()) for n in nll]), "min_k_pp": np.array([_lowest_mean(m, k) for m in mink])}


def _sample(df, limit: int, seed: int):
    return df.sample(n=min(limit, len(df)), random_state=seed).reset_index(drop=True)


def run_generation_audit(run_cfg, artifact: str | Path, cfg: GenerationAuditConfig | None = None, data=None,
                         out_dir: str | Path | None = None) -> dict[str, Any]:
    """Audit the generative ``artifact`` of run ``run_cfg`` (a ``GenerationRunConfig``); writes ``audit.json`` and
    ``audit.md`` under ``OUTPUT/audit/<artifact name>`` and returns the report."""
    from spul.artifacts import read_metadata
    from spul.methods.registry import load_intervention
    from spul.models.config import ModelConfig
    from spul.models.loading import load_model

    cfg = cfg or GenerationAuditConfig()
    artifact = Path(artifact)
    started = time.time()
    meta = read_metadata(artifact)
    base = meta.get("base_model_path") or meta.get("base_model")
    if not base:
        raise ConfigError(f"artifact {str(artifact)!r} does not name its base model", "re-create it with spul run")

    def model_config(path: str) -> ModelConfig:
        return ModelConfig(**{**to_dict(run_cfg.model), "name_or_path": str(path)})

    model, tokenizer = load_model(model_config(base))
    intervention = load_intervention(artifact, model, tokenizer=tokenizer, model_name=meta.get("base_model", ""))
    data = data or load_generation_data(run_cfg.data)
    encoder = GenerationEncoder(GenerationTask(run_cfg.task), tokenizer, run_cfg.model.max_length, run_cfg.max_answer_length)
    decoding = DecodingConfig(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    suite = AttackSuite(seed=cfg.seed)
    sets = {name: _sample(data[name], cfg.limit, cfg.seed) for name in ("forget", "retain")}
    report: dict[str, Any] = {"artifact": str(artifact), "method": meta.get("method"), "intervention": intervention.name,
                              "base_model": meta.get("base_model"), "rows": {k: len(v) for k, v in sets.items()}, "config": to_dict(cfg)}

    families: dict[str, Any] = {}
    for family in cfg.families:
        entry: dict[str, Any] = {}
        for name, df in sets.items():
            questions = df["question"].astype(str).tolist()
            paraphrased = df["paraphrased_question"].astype(str).tolist() if "paraphrased_question" in df.columns else None
            asked = rewrite_questions(family, questions, suite, paraphrased)
            answers = df["answer"].astype(str).tolist()
            entry[name] = {"without_unlearning": float(np.mean(generated_rouge(model, encoder, asked, answers, None, decoding))),
                           "with_unlearning": float(np.mean(generated_rouge(model, encoder, asked, answers, intervention, decoding))),
                           "example": asked[0]}
        if family == "paraphrased":
            entry["source"] = "paraphrased_question column" if "paraphrased_question" in sets["forget"].columns else "rule-based rewrite (held-out pool)"
        families[family] = entry
    report["rouge_l"] = families

    if cfg.membership:
        name = cfg.nonmember_set or next((n for n in ("holdout", "world_facts") if n in data), None)
        if name is None or name not in data:
            raise DataError(f"the data has no non-member set for the membership attack ({name or 'holdout / world_facts'})",
                            "set audit.nonmember_set to a qa set no model trained on, or audit.membership=false")
        members, nonmembers = sets["forget"], _sample(data[name], cfg.limit, cfg.seed)

        def aucs(m, iv) -> dict[str, float]:
            a = membership_scores(m, encoder, members["question"].astype(str).tolist(), members["answer"].astype(str).tolist(), iv, cfg.batch_size, cfg.min_k)
            b = membership_scores(m, encoder, nonmembers["question"].astype(str).tolist(), nonmembers["answer"].astype(str).tolist(), iv,
                                  cfg.batch_size, cfg.min_k)
            return {s: membership_auc(a[s], b[s]) for s in MIA_SCORES}

        mia: dict[str, Any] = {"nonmember_set": name, "members": len(members), "nonmembers": len(nonmembers),
                               "without_unlearning": aucs(model, None), "with_unlearning": aucs(model, intervention)}
        reference = Path(run_cfg.out) / "retain_only" / "model"
        if reference.is_dir():
            ref_model, _ = load_model(model_config(str(reference)))
            mia["retain_only"] = aucs(ref_model, None)
            del ref_model
            mia["priv_leak"] = {s: {side: priv_leak(mia[side][s], mia["retain_only"][s]) for side in ("without_unlearning", "with_unlearning")}
                                for s in MIA_SCORES}
        report["membership_auc"] = mia
    report["seconds"] = round(time.time() - started, 1)
    out = Path(out_dir) if out_dir else Path(run_cfg.out) / "audit" / artifact.name
    write_json(out / "audit.json", report)
    write_text(out / "audit.md", generation_audit_markdown(report))
    report["report_dir"] = str(out)
    return report


def generation_audit_markdown(r: dict[str, Any]) -> str:
    lines = [f"# Generative audit: {r.get('intervention')} ({r.get('method')})", "",
             f"Artifact `{r['artifact']}` on `{r.get('base_model')}`; rows: "
             + ", ".join(f"{k} {v}" for k, v in r["rows"].items()) + ".", "",
             "## ROUGE-L recall of greedy answers by query family", "",
             "Lower on forget with unlearning is the goal; retain should stay where it was.", "",
             "| Family | forget without | forget with | retain without | retain with |", "|---|---:|---:|---:|---:|"]
    for family, e in r.get("rouge_l", {}).items():
        lines.append(f"| {family} | {e['forget']['without_unlearning']:.3f} | {e['forget']['with_unlearning']:.3f} | "
                     f"{e['retain']['without_unlearning']:.3f} | {e['retain']['with_unlearning']:.3f} |")
    if "paraphrased" in r.get("rouge_l", {}):
        lines += ["", f"Paraphrases: {r['rouge_l']['paraphrased'].get('source')}."]
    mia = r.get("membership_auc")
    if mia:
        lines += ["", f"## Membership inference (forget vs {mia['nonmember_set']})", "",
                  "AUC 0.5 = the attacker cannot tell; the retain-only model never saw the forget rows, so its AUC is the target.", "",
                  "| Score | without | with | retain-only | PrivLeak without | PrivLeak with |", "|---|---:|---:|---:|---:|---:|"]
        for s in MIA_SCORES:
            ref = mia.get("retain_only", {}).get(s)
            leak = mia.get("priv_leak", {}).get(s, {})
            cells = [f"{mia['without_unlearning'][s]:.3f}", f"{mia['with_unlearning'][s]:.3f}", "n/a" if ref is None else f"{ref:.3f}",
                     *(f"{leak[k]:+.3f}" if k in leak else "n/a" for k in ("without_unlearning", "with_unlearning"))]
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += ["", f"Audit time: {r.get('seconds')} s.", ""]
    return "\n".join(lines)
