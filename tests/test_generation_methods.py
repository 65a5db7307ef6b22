"""Every registered weight method on generation, as servable artifacts; the generative losses of IDK-DPO, SimNPO
and RMU on multi-token answers checked against Hugging Face's own masked loss, row by row without padding; ECO on
generation (classifier + σ toward the retain-only model) inside ``model.generate``. All on the tiny random Llama."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_generation_pipeline import _config

# ---------------------------------------------------------------------------------------------------------
# the pure generative losses, on a real (tiny) model


def _data():
    from spul.data.generative_sources import GenerationDataConfig, load_generation_data

    return load_generation_data(GenerationDataConfig(generator={"num_authors": 4, "questions_per_author": 3}))


def _setup(tmp_path, model_dir, name: str, **values):
    """A fresh model with a LoRA adapter whose B weights are random (so policy ≠ reference), the method's trainer,
    and a left-padded batch of 2 forget + 2 retain rows with answers of different lengths."""
    from spul.data.generation import GenerationEncoder
    from spul.data.tasks import GenerationTask, GenerationTaskConfig
    from spul.methods.baselines.trainer import WeightTrainer
    from spul.methods.generation.weights import generative_rows, objective_of
    from spul.methods.idk_dpo import PairCollator, PairDataset
    from spul.methods.registry import method_config
    from spul.methods.training import AnswerCollator, AnswerDataset
    from spul.models.loading import ModelConfig, load_model
    from spul.models.lora import add_lora
    from transformers import TrainingArguments

    model, tok = load_model(ModelConfig(name_or_path=str(model_dir), dtype="float32", device="cpu"))
    cfg = method_config(name, {"lora_r": 4, "progress_bar": False, "retain_weight": 0.7, **values})
    task = GenerationTask(GenerationTaskConfig(kind="qa", chat_template="never", refusals=["I don't know.", "No idea at all."]))
    enc = GenerationEncoder(task, tok, 64, 20)
    data = _data()
    rows, preferred = generative_rows(name, data, enc, cfg)
    forget = [i for i, r in enumerate(rows) if r.is_forget][:2]
    retain = [i for i, r in enumerate(rows) if not r.is_forget][:2]
    pick = forget + retain
    rows = [rows[i] for i in pick]
    assert len({len(r.target_ids) for r in rows}) > 1 or len({len(r.prompt_ids) for r in rows}) > 1  # padding matters
    peft = add_lora(model, cfg, cfg.section)
    g = torch.Generator().manual_seed(0)
    for n, p in peft.named_parameters():
        if "lora_B" in n:
            p.data = torch.randn(p.shape, generator=g) * 0.05
    if preferred is not None:
        preferred = [preferred[i] for i in pick]
        ds, coll = PairDataset(rows, preferred), PairCollator(enc.pad_id)
    else:
        ds, coll = AnswerDataset(rows), AnswerCollator(enc.pad_id)
    trainer = WeightTrainer(model=peft, args=TrainingArguments(**cfg.trainer_kwargs(str(tmp_path / "ck"), "cpu")), train_dataset=ds,
                            data_collator=coll, objective=objective_of(name), config=cfg)
    batch = coll([ds[i] for i in range(len(ds))])
    return peft, tok, enc, cfg, rows, preferred, trainer, batch


@torch.no_grad()
def _hf_answer_nll(model, prompt_ids, target_ids) -> tuple[float, int]:
    """(mean NLL over the answer tokens, their number) by Hugging Face's own -100-masked loss, one unpadded row."""
    ids = torch.tensor([prompt_ids + target_ids])
    labels = torch.tensor([[-100] * len(prompt_ids) + list(target_ids)])
    return float(model(input_ids=ids, labels=labels).loss), len(target_ids)


def test_simnpo_generative_loss_is_length_normalised_over_every_answer_token(tmp_path, tiny_model_dir):
    from spul.methods.simnpo import objective

    peft, _, _, cfg, rows, _, trainer, batch = _setup(tmp_path, tiny_model_dir, "simnpo", beta=2.5, gamma=0.3)
    assert all(len(r.target_ids) > 2 for r in rows)  # multi-token answers
    parts = objective(trainer, peft, batch)
    nll = [_hf_answer_nll(peft, r.prompt_ids, r.target_ids)[0] for r in rows]
    forget = np.mean([-(2 / cfg.beta) * math.log(1 / (1 + math.exp(-(-cfg.beta * -n - cfg.gamma)))) for n in nll[:2]])
    retain = np.mean(nll[2:])
    assert float(parts.forget) == pytest.approx(forget, rel=1e-4)
    assert float(parts.retain) == pytest.approx(retain, rel=1e-4)
    assert float(parts.total) == pytest.approx(forget + 0.7 * retain, rel=1e-4)
    parts.total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in peft.named_parameters() if "lora" in n)


def test_idk_dpo_generative_loss_prefers_a_refusal_over_the_true_answer(tmp_path, tiny_model_dir):
    from spul.methods.idk_dpo import objective

    peft, tok, enc, cfg, rows, preferred, trainer, batch = _setup(tmp_path, tiny_model_dir, "idk_dpo", beta=0.5)
    assert all(len(p) > 2 for p in preferred)
    # the preferred answers are refusals (one per question, EOS-terminated), the rejected ones the true answers
    data = _data()
    questions = data["forget"]["question"].tolist()[:2] + data["retain"]["question"].tolist()[:2]
    refusals = [{tuple(enc.encode_answer(q, x)) for x in enc.task.refusals} for q in questions]
    assert all(tuple(p) in ok and p[-1] == tok.eos_token_id for p, ok in zip(preferred, refusals))
    assert all(tuple(r.target_ids) not in ok and r.target_ids == enc.encode_answer(q, a)
               for r, ok, q, a in zip(rows, refusals, questions, data["forget"]["answer"].tolist()[:2] + data["retain"]["answer"].tolist()[:2]))
    parts = objective(trainer, peft, batch)

    def logp(model, r, target):
        n, k = _hf_answer_nll(model, r.prompt_ids, target)
        return -n * k

    expected = []
    for r, p in zip(rows[:2], preferred[:2]):
        pc, pr = logp(peft, r, p), logp(peft, r, r.target_ids)
        with peft.disable_adapter():
            rc, rr = logp(peft, r, p), logp(peft, r, r.target_ids)
        margin = cfg.beta * ((pc - rc) - (pr - rr))
        expected.append(-math.log(1 / (1 + math.exp(-margin))))
    retain = np.mean([_hf_answer_nll(peft, r.prompt_ids, r.target_ids)[0] for r in rows[2:]])
    assert float(parts.forget) == pytest.approx(np.mean(expected), rel=1e-4, abs=1e-6)
    assert float(parts.retain) == pytest.approx(retain, rel=1e-4)
    assert float(parts.total) == pytest.approx(np.mean(expected) + 0.7 * retain, rel=1e-4)
    # with the adapter at zero the policy is the reference: every forget row's loss is exactly log 2
    for n, p in peft.named_parameters():
        if "lora_B" in n:
            p.data.zero_()
    trainer._reference_hidden.clear()
    assert float(objective(trainer, peft, batch).forget) == pytest.approx(math.log(2), abs=1e-6)


def test_rmu_generative_loss_steers_forget_tokens_and_keeps_retain_tokens(tmp_path, tiny_model_dir):
    from spul.methods.rmu import control_vector, objective

    peft, _, _, cfg, rows, _, trainer, batch = _setup(tmp_path, tiny_model_dir, "rmu", layer=0, steering_coeff=3.0)
    parts = objective(trainer, peft, batch)

    @torch.no_grad()
    def layer0(model, r):  # HF's hidden_states[1] is decoder layer 0's output, one unpadded row
        ids = torch.tensor([r.prompt_ids + r.target_ids[:-1]])
        return model(input_ids=ids, output_hidden_states=True).hidden_states[1][0]

    d = layer0(peft, rows[0]).shape[-1]
    target = control_vector(d, cfg.seed) * 3.0
    forget_h = torch.cat([layer0(peft, r) for r in rows[:2]])
    retain_h = torch.cat([layer0(peft, r) for r in rows[2:]])
    with peft.disable_adapter():
        retain_ref = torch.cat([layer0(peft, r) for r in rows[2:]])
    assert float(parts.forget) == pytest.approx(float(((forget_h - target) ** 2).mean()), rel=1e-4)
    assert float(parts.retain) == pytest.approx(float(((retain_h - retain_ref) ** 2).mean()), rel=1e-4)
    assert float(parts.retain) > 0  # the random adapter moved the retain activations
    assert float(parts.total) == pytest.approx(float(parts.forget) + 0.7 * float(parts.retain), rel=1e-5)


# ---------------------------------------------------------------------------------------------------------
# training → artifact → LoraDelta


def _mean_nll(model, enc, data, name, intervention=None, answer=None):
    from spul.evaluation.generation_metrics import example_token_nlls, under_intervention

    qs, ans = data[name]["question"].tolist(), data[name]["answer"].tolist()
    ans = ans if answer is None else [answer] * len(qs)
    examples = enc.encode(qs, ans)
    nlls = under_intervention(intervention, model, qs, [e.prompt_ids for e in examples],
                              lambda hook: example_token_nlls(model, examples, enc.pad_id, 8, row_hook=hook))
    return float(np.mean([n.mean() for n in nlls]))


@pytest.mark.parametrize("method", ["ga_gd", "npo", "simnpo", "idk_dpo", "rmu"])
def test_weight_methods_on_generation_save_servable_lora_artifacts(tmp_path, tiny_model_dir, method):
    """A few LoRA steps with the method's own objective → ``OUTPUT/artifact`` (adapter + spul.json); loaded through
    the registry it is a LoraDelta with the base fingerprint checked; applied, it raises the forget answers' NLL more
    than the retain answers'; the caller's model is left as it was; same inputs reuse the artifact."""
    from spul import pipeline_generation as pg
    from spul.artifacts import read_metadata
    from spul.errors import ArtifactError
    from spul.interventions import LoraDelta
    from spul.methods.registry import load_intervention
    from spul.models.loading import ModelConfig, load_model

    # the tiny random model already gives its answers ~7 nats a token: SimNPO needs a small β not to saturate there
    extra = {"rmu": {"steering_coeff": 20.0}, "idk_dpo": {"beta": 0.5}, "simnpo": {"beta": 0.1, "retain_weight": 0.0}}.get(method, {})
    cfg = _config(tmp_path, tiny_model_dir, unlearn={"method": method, "learning_rate": 5e-2, "num_epochs": 4, "batch_size": 8,
                                                     "lora_r": 4, "progress_bar": False, "save_steps": 1000, **extra},
                  task={"refusals": ["I don't know."]})
    data = pg.prepare(cfg)
    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    artifact = pg.unlearn(cfg, data, str(tiny_model_dir), model_and_tokenizer=(model, tok))
    assert artifact == cfg.out / "artifact"
    assert (artifact / "adapter_model.safetensors").is_file() and (artifact / "adapter_config.json").is_file()
    meta = read_metadata(artifact)
    assert meta["method"] == method and meta["tuning"] == "lora" and meta["training"]["complete"]
    with_retain = len(data["forget"]) + (len(data["retain"]) if method != "simnpo" else 0)
    assert meta["generation_task"]["kind"] == "qa" and meta["training"]["examples"] == with_retain
    if method == "rmu":
        assert meta["rmu"]["layer"] == 1  # -1 = the middle of the tiny model's 2 layers
    assert set(model.state_dict()) == set(before) and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    iv = load_intervention(artifact, model, tokenizer=tok)
    assert isinstance(iv, LoraDelta) and iv.changes_weights
    enc = pg.encoder_for(cfg, tok)
    if method == "idk_dpo":  # DPO moves the preference: the refusal gains on the true answer for forget questions
        def margin(intervention=None):
            return _mean_nll(model, enc, data, "forget", intervention) - _mean_nll(model, enc, data, "forget", intervention, "I don't know.")

        assert margin(iv) > margin() + 0.1, (margin(), margin(iv))
    else:
        rise = {s: _mean_nll(model, enc, data, s, iv) - _mean_nll(model, enc, data, s) for s in ("forget", "retain")}
        assert rise["forget"] > 0.05 and rise["forget"] > rise["retain"], rise
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the hooks are gone after use
    # the base is checked by fingerprint: another model is refused
    other, _ = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    with pytest.raises(ArtifactError, match="fingerprint"):
        load_intervention(artifact, other, tokenizer=tok)
    mtime = (artifact / "spul.json").stat().st_mtime_ns
    assert pg.unlearn(cfg, data, str(tiny_model_dir), model_and_tokenizer=(model, tok)) == artifact
    assert (artifact / "spul.json").stat().st_mtime_ns == mtime


def test_lora_artifact_in_the_generative_report(tmp_path, tiny_model_dir):
    """The run's table evaluates a weight method's artifact as an intervention on the frozen base."""
    from spul import pipeline_generation as pg

    cfg = _config(tmp_path, tiny_model_dir, finetune={"max_steps": 1}, retain_only=False, evaluation={"max_new_tokens": 3},
                  unlearn={"method": "ga_gd", "max_steps": 2, "lora_r": 4, "progress_bar": False, "save_steps": 1000, "learning_rate": 5e-2},
                  data={"generator": {"num_authors": 3, "questions_per_author": 2}})
    rows = pg.run(cfg)
    assert [r["method"] for r in rows] == ["Base (familiarized)", "GA+GD"]
    assert rows[1]["sets"]["forget"]["probability"] != rows[0]["sets"]["forget"]["probability"]


# ---------------------------------------------------------------------------------------------------------
# ECO on generation


def test_eco_on_generation_without_the_retain_only_model_is_a_clear_error(tmp_path, tiny_model_dir):
    from spul import pipeline_generation as pg
    from spul.errors import ConfigError

    cfg = _config(tmp_path, tiny_model_dir, retain_only=False, unlearn={"method": "eco", "search": {"steps": 1}})
    with pytest.raises(ConfigError, match="retain-only"):
        pg.unlearn(cfg, pg.prepare(cfg), str(tiny_model_dir))


def test_eco_on_generation_searches_sigma_toward_the_retain_only_model(tmp_path, tiny_model_dir):
    """Classifier on forget vs retain questions; σ by the zeroth-order search toward the retain-only model's forget
    answer probability; the artifact loads as Gated(EmbeddingCorruption) and, inside ``model.generate``, changes the
    flagged rows' generations only."""
    from spul import pipeline_generation as pg
    from spul.artifacts import read_metadata
    from spul.evaluation.generation_metrics import GenerationEvalConfig, evaluate_qa_set
    from spul.interventions import Gated
    from spul.methods.registry import load_intervention
    from spul.models.generation import DecodingConfig
    from spul.models.loading import ModelConfig, load_model

    cfg = _config(tmp_path, tiny_model_dir, finetune={"max_steps": 2},
                  unlearn={"method": "eco", "corruption": {"name": "noise", "sigma": 0.05, "dims": 0},
                           "search": {"steps": 2, "max_rows": 8, "batch_size": 8, "tolerance": 0.0},
                           "classifier": {"conformal": "none", "threshold": 0.5}})
    data = pg.prepare(cfg)
    pg.train_reference(cfg, data, "retain_only")
    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    artifact = pg.unlearn(cfg, data, str(tiny_model_dir), model_and_tokenizer=(model, tok))
    meta = read_metadata(artifact)
    assert meta["method"] == "eco" and meta["search"]["metric"] == "forget answer probability"
    evaluations = meta["search"]["log"][-1]["evaluations"]
    assert len(evaluations) >= 3 and len({e["sigma"] for e in evaluations}) >= 3  # σ was searched
    best = min(evaluations, key=lambda e: e["objective"])
    assert meta["corruption"]["sigma"] == pytest.approx(best["sigma"])
    assert best["objective"] == pytest.approx(abs(best["probability"] - meta["search"]["retain_only_value"]))
    assert best["objective"] <= abs(meta["search"]["uncorrupted_value"] - meta["search"]["retain_only_value"]) + 1e-9
    mtime = (artifact / "spul.json").stat().st_mtime_ns
    assert pg.unlearn(cfg, data, str(tiny_model_dir), model_and_tokenizer=(model, tok)) == artifact  # same inputs: reused
    assert (artifact / "spul.json").stat().st_mtime_ns == mtime
    iv = load_intervention(artifact, model, tokenizer=tok)
    assert isinstance(iv, Gated) and iv.kind == "eco"
    # a strong corruption makes the effect visible: flagged rows change, the others generate exactly as before
    iv.inner.embedding_guard.corruption.sigma = 50.0
    enc = pg.encoder_for(cfg, tok)
    ecfg = GenerationEvalConfig(decoding=DecodingConfig(max_new_tokens=5, batch_size=4), batch_size=4)
    for name in ("forget", "retain"):
        base = evaluate_qa_set(model, enc, data, name, identity="base", cfg=ecfg)
        eco = evaluate_qa_set(model, enc, data, name, identity="eco", cfg=ecfg, intervention=iv)
        flags = iv.flags(data[name]["question"].tolist())
        for i, flagged in enumerate(flags):
            if not flagged:
                assert eco["generation"][i] == base["generation"][i]
                assert eco["answer_nll"][i] == pytest.approx(base["answer_nll"][i])
            else:
                assert eco["answer_nll"][i] != pytest.approx(base["answer_nll"][i])
        if name == "forget":  # the classifier flags most forget questions it was trained on, few retain ones
            assert flags.mean() > 0.5
            assert any(eco["generation"][i] != base["generation"][i] for i in np.flatnonzero(flags))
        else:
            assert flags.mean() < 0.5


def test_eco_corruption_inside_generate_respects_left_padding(tiny_model):
    """In a left-padded ``generate`` batch the guard corrupts exactly each flagged row's prompt tokens: with the
    deterministic ``sign_flip`` corruption every row's generation equals its generation alone (no padding, so no
    position can be mistaken), flagged rows change, unflagged rows stay the base model's. A one-token prompt alone
    is a one-token prefill, still corrupted (only the decode steps after it are left alone)."""
    from spul.evaluation.generation_metrics import under_intervention
    from spul.interventions import Gated
    from spul.interventions.corruption import Corruption, CorruptionConfig, EmbeddingCorruption, EmbeddingGuard
    from spul.models.generation import DecodingConfig, generate_ids

    model, tok = tiny_model

    class Flags:  # a fixed decision per text, so that the test is about the corruption's positions only
        def flags(self, texts):
            return np.array(["great" in t for t in texts])

    guard = EmbeddingGuard(Corruption(CorruptionConfig(name="sign_flip")), pad_token_id=tok.pad_token_id)
    eco = Gated("eco", EmbeddingCorruption("eco", guard), Flags(), kind="eco")
    texts = ["the acting was great", "a dull and boring movie that I hated", "great", "Alice Smith loved this film ."]
    prompts = [tok(t).input_ids for t in texts]
    assert len({len(p) for p in prompts}) == len(prompts)  # every row is padded differently
    decoding = DecodingConfig(max_new_tokens=6, batch_size=8)

    def run(rows, iv):
        return under_intervention(iv, model, [texts[i] for i in rows], [prompts[i] for i in rows], lambda hook: generate_ids(
            model, [prompts[i] for i in rows], pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, decoding=decoding, row_hook=hook))

    batch, base = run(range(4), eco), run(range(4), None)
    alone = [run([i], eco)[0] for i in range(4)]
    assert batch == alone
    assert guard.calls >= 1
    assert [batch[i] == base[i] for i in range(4)] == [False, True, False, True]
