"""Metrics of generative unlearning: TOFU's (ROUGE-L recall, probability, truth ratio, forget quality, model
utility) and MUSE's (verbatim and knowledge ROUGE, privacy leakage by Min-K%++), plus fluency.

Pure functions take numbers (per-token NLLs, scores) and are unit-tested by hand; the model-facing functions
score or generate in left-padded batches and return one value per example. ``evaluate_qa_set`` and
``evaluate_passages`` put them together per named set, cached on disk under the model's identity and the
set's content fingerprint (a changed model or changed rows never reuse old numbers).

Definitions (TOFU, Maini et al. 2024; MUSE, Shi et al. 2024; Min-K%++, Zhang et al. 2024):

* probability: ``P(a|q)^(1/|a|) = exp(-mean token NLL)``;
* truth ratio ``R``: mean over perturbed answers of ``P(ã|q)^(1/|ã|)`` divided by ``P(â|q)^(1/|â|)`` for the
  paraphrased answer ``â`` (``geometric=True``: the geometric mean over perturbed answers, as TOFU's code);
  reported as ``mean(min(R, 1/R))`` on the forget set and ``mean(max(0, 1 - R))`` elsewhere;
* forget quality: p-value of the two-sample KS test between the unlearned and the retain-only model's truth
  ratios on the forget set (the KS test is invariant to the monotone map ``R -> 1/R``, so either direction
  of the ratio gives the same p-value);
* model utility: harmonic mean of ROUGE, probability and truth-ratio score on every non-forget set;
* Min-K%++: per token ``(log p(x_t) - μ_t) / σ_t`` with ``μ_t``, ``σ_t`` the mean and standard deviation of
  ``log p(z)`` for ``z`` drawn from the model's next-token distribution; a text's score is the mean of its
  lowest ``k`` fraction of tokens (higher = more member-like);
* PrivLeak: ``(AUC_unlearned - AUC_retain_only) / AUC_retain_only`` where AUC is the probability that the
  Min-K%++ score ranks a forget passage above a holdout passage.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spul.data.encoding import EncodedExample
from spul.data.generation import GenerationEncoder, collate_answers
from spul.data.generative_sources import GenerationData
from spul.data.tasks import GenerationTask, GenerationTaskConfig, TaskKind
from spul.errors import ConfigError, DataError
from spul.io import read_json, sha256_text, write_json, write_text
from spul.methods.losses import answer_positions
from spul.models.forward import hidden_states, lm_logits
from spul.models.generation import DecodingConfig, generate_ids

# ---------------------------------------------------------------------------------------------------------
# pure metrics


@lru_cache(maxsize=4)
def _scorer(stemmer: bool):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stemmer)


def rouge_l(prediction: str, reference: str, stemmer: bool = True) -> dict[str, float]:
    """ROUGE-L of ``prediction`` against ``reference`` (``rouge-score``): ``recall``, ``precision``, ``f1``."""
    score = _scorer(stemmer).score(reference, prediction)["rougeL"]
    return {"recall": float(score.recall), "precision": float(score.precision), "f1": float(score.fmeasure)}


def rouge_l_recall(prediction: str, reference: str) -> float:
    return rouge_l(prediction, reference)["recall"]


def normalised_probability(token_nll: Sequence[float] | np.ndarray) -> float:
    """``P(answer)^(1/len) = exp(-mean token NLL)``."""
    values = np.asarray(token_nll, dtype=np.float64)
    if values.size == 0:
        raise ValueError("an answer without tokens has no probability")
    return float(np.exp(-values.mean()))


def truth_ratio(paraphrased_mean_nll: float, perturbed_mean_nll: Sequence[float], geometric: bool = False) -> float:
    """``R = mean_j P(ã_j)^(1/|ã_j|) / P(â)^(1/|â|)`` from mean token NLLs (paraphrased ``â``, perturbed ``ã_j``)."""
    pert = np.asarray(perturbed_mean_nll, dtype=np.float64)
    if pert.size == 0:
        raise ValueError("the truth ratio needs at least one perturbed answer")
    if geometric:
        return float(np.exp(paraphrased_mean_nll - pert.mean()))
    return float(np.exp(-pert).mean() / np.exp(-paraphrased_mean_nll))


def truth_ratio_score(ratios: Sequence[float], forget: bool) -> float:
    """TOFU's summary: ``mean(min(R, 1/R))`` on the forget set, ``mean(max(0, 1 - R))`` on the others."""
    r = np.asarray(ratios, dtype=np.float64)
    if forget:
        return float(np.minimum(r, 1 / r).mean())
    return float(np.maximum(0.0, 1 - r).mean())


def forget_quality(unlearned_ratios: Sequence[float], retain_only_ratios: Sequence[float]) -> dict[str, float]:
    """KS-test p-value (``forget_quality``) and statistic between two truth-ratio distributions on the forget set."""
    from scipy.stats import ks_2samp

    a, b = np.asarray(unlearned_ratios, dtype=np.float64), np.asarray(retain_only_ratios, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("forget quality needs truth ratios from both models")
    result = ks_2samp(a, b)
    return {"forget_quality": float(result.pvalue), "ks_statistic": float(result.statistic)}


def model_utility(values: Sequence[float]) -> float:
    """Harmonic mean of the retain-side metrics (0 if any is 0)."""
    from scipy.stats import hmean

    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("model utility needs at least one metric")
    if (v < 0).any():
        raise ValueError(f"model utility takes non-negative metrics, got {v.tolist()}")
    return 0.0 if (v == 0).any() else float(hmean(v))


def min_k_plus_plus(logits: torch.Tensor, targets: torch.Tensor, k: float = 0.2) -> float:
    """Min-K%++ score of one text from the next-token ``logits [T, V]`` at the positions predicting ``targets [T]``."""
    return _lowest_mean(min_k_plus_plus_tokens(logits, targets), k)


def min_k_plus_plus_tokens(logits: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """Per-token ``(log p(x_t) - μ_t) / σ_t`` ``[T]``."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    p = logp.exp()
    mu = (p * logp).sum(-1)
    sigma = ((p * logp.pow(2)).sum(-1) - mu.pow(2)).clamp(min=1e-12).sqrt()
    token = logp.gather(-1, targets.view(-1, 1)).squeeze(-1)
    return ((token - mu) / sigma).cpu().numpy()


def _lowest_mean(scores: np.ndarray, k: float) -> float:
    if not 0 < k <= 1:
        raise ValueError(f"k={k} must be a fraction in (0, 1]")
    n = max(1, int(len(scores) * k))
    return float(np.sort(scores)[:n].mean())


def membership_auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """ROC AUC of telling members (label 1) from non-members by score (scikit-learn)."""
    from sklearn.metrics import roc_auc_score

    m, n = list(member_scores), list(nonmember_scores)
    if not m or not n:
        raise ValueError("membership AUC needs member and non-member scores")
    return float(roc_auc_score([1] * len(m) + [0] * len(n), m + n))


def priv_leak(auc_unlearned: float, auc_retain_only: float) -> float:
    """MUSE's PrivLeak: ``(AUC_unlearned - AUC_retain_only) / AUC_retain_only`` (0 = like never trained on it)."""
    if auc_retain_only <= 0:
        raise ValueError("the retain-only model's AUC must be positive")
    return (auc_unlearned - auc_retain_only) / auc_retain_only


def fact_recall(generation: str, fact: str) -> float:
    """1.0 if ``fact`` occurs in ``generation`` (case and surrounding spaces ignored), else 0.0."""
    return float(" ".join(fact.lower().split()) in " ".join(generation.lower().split()))


def unique_token_ratio(ids: Sequence[int]) -> float:
    """Distinct tokens / tokens of one generation (1 = no repetition; 0 for an empty output)."""
    return len(set(ids)) / len(ids) if len(ids) else 0.0


# ---------------------------------------------------------------------------------------------------------
# model-facing, batched


@torch.inference_mode()
def example_token_nlls(model, examples: list[EncodedExample], pad_id: int, batch_size: int = 16,
                       soft_prompt: torch.Tensor | None = None, with_min_k: bool = False,
                       row_hook=None) -> list[np.ndarray] | tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-token NLL of every target token of each example (in order), left-padded batches bucketed by length.

    With ``with_min_k`` also each token's Min-K%++ score. ``soft_prompt`` (``[p, d]`` or ``[1, p, d]``) is put in
    front of every row, as ``forward.hidden_states`` does. ``row_hook(rows)`` is called before each batch with its
    rows' indices into ``examples`` (an applied intervention's hook, see ``spul.interventions.base``).
    """
    device = next(model.parameters()).device
    nll_out: list[np.ndarray] = [np.zeros(0)] * len(examples)
    mink_out: list[np.ndarray] = [np.zeros(0)] * len(examples)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].prompt_ids) + len(examples[i].target_ids))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = collate_answers([examples[i] for i in rows], pad_id)
        ids = torch.tensor(batch.input_ids, device=device)
        mask = torch.tensor(batch.attention_mask, device=device)
        labels = torch.tensor(batch.labels, device=device)
        if row_hook is not None:
            row_hook(np.asarray(rows))
        prompt = None
        if soft_prompt is not None:
            sp = soft_prompt.unsqueeze(0) if soft_prompt.dim() == 2 else soft_prompt
            prompt = sp.to(device).expand(len(rows), -1, -1)
        h, targets, row_of = answer_positions(hidden_states(model, ids, mask, prompt), labels)
        logits = lm_logits(model, h)
        nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none").double().cpu().numpy()
        mink = min_k_plus_plus_tokens(logits, targets) if with_min_k else None
        row_of = row_of.cpu().numpy()
        for j, i in enumerate(rows):
            sel = row_of == j
            nll_out[i] = nll[sel]
            if mink is not None:
                mink_out[i] = mink[sel]
    return (nll_out, mink_out) if with_min_k else nll_out


def answer_nlls(model, encoder: GenerationEncoder, values: list[str], answers: list[str], batch_size: int = 16,
                soft_prompt: torch.Tensor | None = None) -> list[np.ndarray]:
    """Per-token NLLs of each answer after its prompt (the answer's EOS token included when the encoder adds it)."""
    return example_token_nlls(model, encoder.encode(values, answers), encoder.pad_id, batch_size, soft_prompt)


def text_examples(tokenizer, texts: list[str], max_length: int = 512) -> list[EncodedExample]:
    """Whole texts as examples: the first token is the prompt, every later token a target (for perplexity and
    membership scores). The tokenizer's start token, when it adds one, is the prompt instead."""
    out = []
    for i, text in enumerate(texts):
        ids = list(tokenizer(text, add_special_tokens=True).input_ids)[:max_length]
        if len(ids) < 2:
            raise DataError(f"text {i} ({text[:40]!r}) has fewer than two tokens", "remove it; it cannot be scored")
        out.append(EncodedExample(prompt_ids=ids[:1], target_ids=ids[1:], label=-1, is_forget=False, index=i))
    return out


def min_k_plus_plus_scores(model, tokenizer, texts: list[str], k: float = 0.2, batch_size: int = 8, max_length: int = 512,
                           soft_prompt: torch.Tensor | None = None) -> list[float]:
    """The Min-K%++ membership score of each text."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    _, mink = example_token_nlls(model, text_examples(tokenizer, texts, max_length), pad, batch_size, soft_prompt, with_min_k=True)
    return [_lowest_mean(s, k) for s in mink]


def output_perplexities(base_model, encoder: GenerationEncoder, values: list[str], outputs: list[str],
                        batch_size: int = 16) -> list[float]:
    """Perplexity of each generated output after its prompt under ``base_model`` (fluency); NaN for empty outputs."""
    keep = [i for i, o in enumerate(outputs) if o.strip()]
    result = [float("nan")] * len(outputs)
    if keep:
        nlls = answer_nlls(base_model, encoder, [values[i] for i in keep], [outputs[i] for i in keep], batch_size)
        for i, n in zip(keep, nlls):
            result[i] = float(np.exp(n.mean()))
    return result


# ---------------------------------------------------------------------------------------------------------
# per-set evaluation with a cache


@dataclass
class GenerationEvalConfig:
    batch_size: int = 16
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    max_length: int = 256
    max_answer_length: int = 64
    min_k: float = 0.2
    # MUSE compares the continuation with the first ``max_new_tokens`` tokens of the true continuation
    truncate_reference: bool = True
    geometric_truth_ratio: bool = False
    cache: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.decoding, dict):
            self.decoding = DecodingConfig(**self.decoding)
        if self.batch_size < 1:
            raise ConfigError(f"evaluation batch_size={self.batch_size} must be at least 1", "use e.g. 16")
        if not 0 < self.min_k <= 1:
            raise ConfigError(f"min_k={self.min_k} must be a fraction in (0, 1]", "use e.g. 0.2 for the lowest 20 % of tokens")


def _cached(cache_dir: str | Path | None, cfg: GenerationEvalConfig, key_parts: list[str], n: int, compute) -> dict[str, list]:
    """``compute()`` -> per-example lists, stored as JSON under a hash of ``key_parts``; reused only when every
    list has ``n`` entries."""
    path = Path(cache_dir) / f"gen-{sha256_text(*key_parts)[:24]}.json" if (cache_dir and cfg.cache) else None
    if path is not None and path.is_file():
        try:
            stored = read_json(path)
            records = stored["records"]
            if stored.get("key") == key_parts and all(len(v) == n for v in records.values()):
                return records
        except (ValueError, KeyError, TypeError):
            pass  # a damaged entry is recomputed
    records = compute()
    if path is not None:
        write_json(path, {"key": key_parts, "records": records})
    return records


def _encoder_key(encoder: GenerationEncoder) -> str:
    cfg = encoder.task.config
    return json.dumps({"kind": cfg.kind.value, "template": cfg.template, "chat": encoder.chat, "system": cfg.system_prompt,
                       "max_length": encoder.max_length, "max_answer": encoder.max_answer_length, "eos": encoder.append_eos})


def under_intervention(intervention, model, texts: list[str], prompts: list[list[int]], fn):
    """``fn(row_hook)`` with ``intervention`` (``spul.interventions.Intervention`` or None) applied to the rows
    ``texts`` / ``prompts`` (their token ids): ``row_hook(rows)`` goes to ``generate_ids`` / ``example_token_nlls``
    so a gate (ECO's classifier) and an embedding corruption see which rows each batch holds."""
    if intervention is None:
        return fn(None)
    with intervention.applied(model, list(texts), [list(p) for p in prompts]) as hook:
        if hook is None:
            return fn(None)

        def row_hook(rows):
            mask = hook(np.asarray(rows))
            if mask is not None and intervention.vectors is not None and not bool(np.all(mask)):
                raise ConfigError(f"{intervention.name!r} is a gated soft prompt, which the generative evaluation does not apply per row",
                                  "evaluate the soft prompt on its own, or ECO (a gated corruption)")

        return fn(row_hook)


def evaluate_qa_set(model, encoder: GenerationEncoder, data: GenerationData, name: str, *, identity: str,
                    cfg: GenerationEvalConfig | None = None, soft_prompt: torch.Tensor | None = None,
                    cache_dir: str | Path | None = None, intervention=None) -> dict[str, list]:
    """Per example of set ``name``: the greedy ``generation``, its ``rouge_l_recall`` against the answer, the
    answer's length-normalised ``probability``, and, where the set has paraphrased / perturbed answers,
    ``truth_ratio`` and ``true_vs_perturbed`` (TOFU's probability for the utility sets: P(true) over P(true) +
    Σ P(perturbed), each length-normalised).

    ``identity`` names the model (+ artifact) state, e.g. its weights fingerprint; it keys the cache.
    ``intervention`` (an artifact loaded with ``spul.methods.registry.load_intervention``: LoRA delta, ECO, soft
    prompt) is applied to every generation and scoring pass; its soft prompt, if any, replaces ``soft_prompt``.
    """
    cfg = cfg or GenerationEvalConfig()
    if intervention is not None and intervention.vectors is not None:
        soft_prompt = intervention.vectors
    if encoder.task.kind is not TaskKind.QA:
        raise ConfigError("evaluate_qa_set needs a qa task", "build the encoder with GenerationTaskConfig(kind='qa')")
    df = data[name]
    questions = df["question"].astype(str).tolist()
    answers = df["answer"].astype(str).tolist()
    truth = data.has_truth_columns(name)
    key = [identity, data.fingerprint(name), _encoder_key(encoder), json.dumps(asdict(cfg.decoding)), "qa-v2",
           str(cfg.geometric_truth_ratio), str(truth)]

    def nlls(values: list[str], targets: list[str]) -> list[np.ndarray]:
        examples = encoder.encode(values, targets)
        return under_intervention(intervention, model, values, [e.prompt_ids for e in examples],
                                  lambda hook: example_token_nlls(model, examples, encoder.pad_id, cfg.batch_size, soft_prompt, row_hook=hook))

    def compute() -> dict[str, list]:
        prompts = [encoder.encode_prompt(q) for q in questions]
        ids = under_intervention(intervention, model, questions, prompts, lambda hook: generate_ids(
            model, prompts, pad_id=encoder.pad_id, eos_id=encoder.tokenizer.eos_token_id, decoding=cfg.decoding,
            soft_prompt=soft_prompt, row_hook=hook))
        texts = [encoder.decode(row) for row in ids]
        gold = nlls(questions, answers)
        records: dict[str, list] = {
            "generation": texts,
            "rouge_l_recall": [rouge_l_recall(t, a) for t, a in zip(texts, answers)],
            "probability": [normalised_probability(n) for n in gold],
            "answer_nll": [float(n.mean()) for n in gold],
            "unique_token_ratio": [unique_token_ratio(r) for r in ids],
        }
        if "fact" in df.columns:
            records["fact_recall"] = [fact_recall(t, str(f)) for t, f in zip(texts, df["fact"])]
        if truth:
            para_col = df["paraphrased_answer"].astype(str).tolist()
            para = nlls(questions, para_col)
            perturbed = data.perturbed(name)
            flat_q = [q for q, ps in zip(questions, perturbed) for _ in ps]
            flat_a = [p for ps in perturbed for p in ps]
            flat = nlls(flat_q, flat_a)
            means, pos = [], 0
            for ps in perturbed:
                means.append([float(n.mean()) for n in flat[pos : pos + len(ps)]])
                pos += len(ps)
            records["paraphrased_nll"] = [float(n.mean()) for n in para]
            records["perturbed_nll"] = means
            records["truth_ratio"] = [truth_ratio(p, m, cfg.geometric_truth_ratio) for p, m in zip(records["paraphrased_nll"], means)]
            records["true_vs_perturbed"] = [
                math.exp(-g) / (math.exp(-g) + sum(math.exp(-x) for x in m)) for g, m in zip(records["answer_nll"], means)
            ]
        return records

    return _cached(cache_dir, cfg, key, len(df), compute)


UTILITY_METRICS = ("rouge_l_recall", "probability", "truth_ratio")


def summarise_qa_set(records: dict[str, list], forget: bool, utility_probability: bool = False) -> dict[str, float]:
    """TOFU's per-set numbers: mean ROUGE-L recall, mean probability (``true_vs_perturbed`` for the real-authors
    and world-facts sets), and the truth-ratio score."""
    out = {"rouge_l_recall": float(np.mean(records["rouge_l_recall"]))}
    prob_key = "true_vs_perturbed" if utility_probability and "true_vs_perturbed" in records else "probability"
    out["probability"] = float(np.mean(records[prob_key]))
    if "truth_ratio" in records:
        out["truth_ratio"] = truth_ratio_score(records["truth_ratio"], forget=forget)
    if "fact_recall" in records:
        out["fact_recall"] = float(np.mean(records["fact_recall"]))
    return out


def tofu_summary(per_set: dict[str, dict[str, list]], retain_only_forget: dict[str, list] | None = None) -> dict[str, Any]:
    """One TOFU row from ``evaluate_qa_set`` records per set name (``forget``, ``retain``/``retain_eval``,
    ``real_authors``, ``world_facts``); ``retain_only_forget`` is the retain-only model's forget-set records
    (forget quality needs them)."""
    if "forget" not in per_set:
        raise DataError("a TOFU summary needs the forget set's records", "evaluate the forget set")
    sets = {name: summarise_qa_set(r, forget=name == "forget", utility_probability=name in ("real_authors", "world_facts"))
            for name, r in per_set.items()}
    utility_values = [v for name, s in sets.items() if name != "forget" and not (name == "retain" and "retain_eval" in sets)
                      for key, v in s.items() if key in UTILITY_METRICS]
    row: dict[str, Any] = {"sets": sets, "model_utility": model_utility(utility_values) if utility_values else float("nan"),
                           "rouge_forget": sets["forget"]["rouge_l_recall"]}
    retain_name = "retain_eval" if "retain_eval" in sets else "retain" if "retain" in sets else None
    row["rouge_retain"] = sets[retain_name]["rouge_l_recall"] if retain_name else float("nan")
    if retain_only_forget is not None:
        if "truth_ratio" not in per_set["forget"] or "truth_ratio" not in retain_only_forget:
            raise DataError("forget quality needs truth ratios on the forget set", "give the forget set paraphrased_answer and perturbed_answer")
        row.update(forget_quality(per_set["forget"]["truth_ratio"], retain_only_forget["truth_ratio"]))
    return row


def evaluate_passages(model, tokenizer, data: GenerationData, *, identity: str, cfg: GenerationEvalConfig | None = None,
                      qa_task: GenerationTask | None = None, soft_prompt: torch.Tensor | None = None,
                      cache_dir: str | Path | None = None) -> dict[str, dict[str, list]]:
    """MUSE-style per-example records: ``verbmem_forget`` (continuation, ROUGE-L F1 against the true
    continuation), ``knowmem_forget`` / ``knowmem_retain`` (answer, ROUGE-L F1 and recall), and Min-K%++
    scores of the ``forget`` and ``holdout`` passages (for PrivLeak)."""
    cfg = cfg or GenerationEvalConfig()
    if data.kind is not TaskKind.COMPLETION:
        raise DataError(f"{data.source!r} is not a passages (completion) data set", "use evaluate_qa_set for QA data")
    out: dict[str, dict[str, list]] = {}
    completion = GenerationEncoder(GenerationTask(GenerationTaskConfig(kind=TaskKind.COMPLETION)), tokenizer,
                                   cfg.max_length, cfg.max_answer_length)
    if "verbmem_forget" in data:
        df = data["verbmem_forget"]
        key = [identity, data.fingerprint("verbmem_forget"), _encoder_key(completion), json.dumps(asdict(cfg.decoding)),
               "verbmem-v1", str(cfg.truncate_reference)]

        def verbmem() -> dict[str, list]:
            prompts = [completion.encode_prompt(p) for p in df["prompt"].astype(str)]
            ids = generate_ids(model, prompts, pad_id=completion.pad_id, eos_id=tokenizer.eos_token_id, decoding=cfg.decoding,
                               soft_prompt=soft_prompt)
            texts = [completion.decode(r) for r in ids]
            refs = [_truncate(tokenizer, g, cfg.decoding.max_new_tokens) if cfg.truncate_reference else g for g in df["gt"].astype(str)]
            return {"generation": texts, "reference": refs, "rouge_l_f1": [rouge_l(t, r)["f1"] for t, r in zip(texts, refs)],
                    "unique_token_ratio": [unique_token_ratio(r) for r in ids]}

        out["verbmem_forget"] = _cached(cache_dir, cfg, key, len(df), verbmem)
    qa = GenerationEncoder(qa_task or GenerationTask(GenerationTaskConfig(kind=TaskKind.QA)), tokenizer, cfg.max_length, cfg.max_answer_length)
    for name in ("knowmem_forget", "knowmem_retain"):
        if name in data:
            records = evaluate_qa_set(model, qa, data, name, identity=identity, cfg=cfg, soft_prompt=soft_prompt, cache_dir=cache_dir)
            answers = data[name]["answer"].astype(str).tolist()
            out[name] = {**records, "rouge_l_f1": [rouge_l(g, a)["f1"] for g, a in zip(records["generation"], answers)]}
    for name in ("forget", "holdout"):
        if name in data and "text" in data[name].columns:
            df = data[name]
            key = [identity, data.fingerprint(name), str(cfg.max_length), str(cfg.min_k), "mink-v1"]

            def mink(df=df) -> dict[str, list]:
                return {"min_k_plus_plus": min_k_plus_plus_scores(model, tokenizer, df["text"].astype(str).tolist(), cfg.min_k,
                                                                  cfg.batch_size, cfg.max_length, soft_prompt)}

            out[name] = _cached(cache_dir, cfg, key, len(df), mink)
    return out


def _truncate(tokenizer, text: str, n_tokens: int) -> str:
    ids = tokenizer(text, add_special_tokens=False).input_ids[:n_tokens]
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def passages_summary(records: dict[str, dict[str, list]], retain_only: dict[str, dict[str, list]] | None = None) -> dict[str, float]:
    """MUSE's row: VerbMem (mean ROUGE-L F1 on forget continuations), KnowMem forget / retain (mean ROUGE-L F1),
    the forget-vs-holdout Min-K%++ AUC, and PrivLeak when the retain-only model's records are given."""
    row: dict[str, float] = {}
    if "verbmem_forget" in records:
        row["verbmem_forget"] = float(np.mean(records["verbmem_forget"]["rouge_l_f1"]))
    for name in ("knowmem_forget", "knowmem_retain"):
        if name in records:
            row[name] = float(np.mean(records[name]["rouge_l_f1"]))
    if "forget" in records and "holdout" in records:
        row["auc"] = membership_auc(records["forget"]["min_k_plus_plus"], records["holdout"]["min_k_plus_plus"])
        if retain_only is not None:
            row["auc_retain_only"] = membership_auc(retain_only["forget"]["min_k_plus_plus"], retain_only["holdout"]["min_k_plus_plus"])
            row["priv_leak"] = priv_leak(row["auc"], row["auc_retain_only"])
    return row


# ---------------------------------------------------------------------------------------------------------
# reports

TOFU_COLUMNS = (("forget_quality", "Forget quality ↑"), ("model_utility", "Model utility ↑"), ("rouge_forget", "ROUGE-L forget ↓"),
                ("rouge_retain", "ROUGE-L retain ↑"))


def tofu_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table, one row per ``{"method": name, **tofu_summary(...)}``; missing numbers show as '–'."""
    head = ["Method"] + [title for _, title in TOFU_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for row in rows:
        cells = [str(row.get("method", "?"))]
        for key, _ in TOFU_COLUMNS:
            value = row.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("–")
            elif key == "forget_quality":
                cells.append(f"{value:.3g}")
            else:
                cells.append(f"{value:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


PASSAGE_COLUMNS = (("verbmem_forget", "VerbMem forget ↓"), ("knowmem_forget", "KnowMem forget ↓"), ("knowmem_retain", "KnowMem retain ↑"),
                   ("auc", "Min-K%++ AUC"), ("priv_leak", "PrivLeak (→ 0)"), ("unique_token_ratio", "unique-token ratio ↑"),
                   ("output_perplexity", "PPL under base"))


def passages_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table, one row per ``{"method": name, **passages_summary(...)}`` (+ fluency); missing numbers '–'."""
    head = ["Method"] + [title for _, title in PASSAGE_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for row in rows:
        cells = [str(row.get("method", "?"))]
        for key, _ in PASSAGE_COLUMNS:
            value = row.get(key)
            cells.append("–" if value is None or (isinstance(value, float) and math.isnan(value)) else
                         f"{value:+.3f}" if key == "priv_leak" else f"{value:.1f}" if key == "output_perplexity" else f"{value:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_generation_report(rows: Sequence[dict[str, Any]], folder: str | Path, title: str = "Generative unlearning",
                            extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """``results.json`` (every number) and ``results.md`` (the TOFU-style table) in ``folder``."""
    folder = Path(folder)
    json_path = write_json(folder / "results.json", {"rows": list(rows), **(extra or {})})
    md = (f"# {title}\n\nForget quality: KS-test p-value against the retain-only model's truth ratios on the forget set "
          "(higher = closer to a model that never saw the forget data). Model utility: harmonic mean of ROUGE-L recall, "
          f"probability and truth-ratio score on the retain-side sets. ROUGE-L: recall of greedy answers.\n\n{tofu_table(rows)}\n")
    return json_path, write_text(folder / "results.md", md)


def plot_forget_quality_vs_utility(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Scatter of model utility (x) against forget quality (y, log scale), one labelled point per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in rows if r.get("forget_quality") is not None and r.get("model_utility") is not None]
    if not points:
        raise DataError("no row has both forget quality and model utility", "evaluate the retain-only model's forget set too")
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in points:
        fq = max(float(r["forget_quality"]), 1e-300)
        ax.scatter(float(r["model_utility"]), fq)
        ax.annotate(str(r.get("method", "?")), (float(r["model_utility"]), fq), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("model utility ↑")
    ax.set_ylabel("forget quality (KS p-value) ↑")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
