"""``spul audit`` on a generative artifact: re-asked questions (paraphrases, held-out injections) scored by ROUGE-L
with and without the artifact, and a membership-inference AUC forget vs a never-trained set, with the retain-only
model as the reference. Tiny random Llama, a few rows."""

from __future__ import annotations

import numpy as np
import pytest
from test_generation_pipeline import _config


def test_rewrites_come_from_the_held_out_pools_and_are_repeatable():
    from spul.data.attacks import AttackSuite
    from spul.evaluation.attacks.generation_audit import rewrite_questions

    suite = AttackSuite(seed=0)
    qs = ["Where was Ann Lee born?", "What did Ann Lee write?", "Who taught Ann Lee?"]
    held = {a.payload for a in suite.pool("injection", "heldout")}
    trained = {a.payload for a in suite.pool("injection", "train")} - held
    for family, where in (("injection_prefix", str.startswith), ("injection_suffix", str.endswith)):
        out = rewrite_questions(family, qs, suite)
        assert out == rewrite_questions(family, qs, suite)  # the same rewrite every run
        for q, o in zip(qs, out):
            injected = o.replace(q, "").strip()
            assert injected in held and injected not in trained and where(o, injected)
    para = rewrite_questions("paraphrased", qs, suite)
    assert all(p != q for p, q in zip(para, qs))
    assert rewrite_questions("paraphrased", qs, suite, ["a", "b", "c"]) == ["a", "b", "c"]  # TOFU's column wins
    assert rewrite_questions("original", qs, suite) == qs


def test_generation_audit_on_a_lora_artifact(tmp_path, tiny_model_dir):
    from spul import pipeline_generation as pg
    from spul.evaluation.attacks.generation_audit import GenerationAuditConfig, membership_scores, run_generation_audit
    from spul.evaluation.generation_metrics import GenerationEvalConfig, evaluate_qa_set, membership_auc
    from spul.methods.registry import load_intervention
    from spul.models.generation import DecodingConfig
    from spul.models.loading import ModelConfig, load_model

    cfg = _config(tmp_path, tiny_model_dir, finetune={"max_steps": 2},
                  unlearn={"method": "ga_gd", "learning_rate": 5e-2, "num_epochs": 4, "batch_size": 8, "lora_r": 4,
                           "progress_bar": False, "save_steps": 1000})
    data = pg.prepare(cfg)
    pg.train_reference(cfg, data, "retain_only")
    artifact = pg.unlearn(cfg, data, str(tiny_model_dir))
    acfg = GenerationAuditConfig(limit=4, max_new_tokens=4, batch_size=4)
    report = run_generation_audit(cfg, artifact, acfg, data=data)
    assert report["method"] == "ga_gd" and report["rows"] == {"forget": 3, "retain": 4}
    assert set(report["rouge_l"]) == {"original", "paraphrased", "injection_prefix", "injection_suffix"}
    assert report["rouge_l"]["paraphrased"]["source"].startswith("rule-based")
    for e in report["rouge_l"].values():
        assert all(0 <= e[s][k] <= 1 for s in ("forget", "retain") for k in ("without_unlearning", "with_unlearning"))
    # the original family is the plain evaluation of the same rows: equal to evaluate_qa_set with and without the artifact
    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    iv = load_intervention(artifact, model, tokenizer=tok)
    forget = data["forget"].sample(n=3, random_state=0).reset_index(drop=True)
    from spul.data.generative_sources import GenerationData

    sub = GenerationData(data.kind, {"forget": forget, "retain": data["retain"]}, data.source)
    ecfg = GenerationEvalConfig(decoding=DecodingConfig(max_new_tokens=4, batch_size=4), batch_size=4)
    enc = pg.encoder_for(cfg, tok)
    for key, intervention in (("without_unlearning", None), ("with_unlearning", iv)):
        records = evaluate_qa_set(model, enc, sub, "forget", identity=key, cfg=ecfg, intervention=intervention)
        assert report["rouge_l"]["original"]["forget"][key] == pytest.approx(float(np.mean(records["rouge_l_recall"])))
    mia = report["membership_auc"]
    assert mia["nonmember_set"] == "world_facts" and mia["members"] == 3
    for side in ("without_unlearning", "with_unlearning", "retain_only"):
        assert all(0 <= mia[side][s] <= 1 for s in ("loss", "min_k_pp"))
    assert mia["priv_leak"]["loss"]["with_unlearning"] == pytest.approx(
        (mia["with_unlearning"]["loss"] - mia["retain_only"]["loss"]) / mia["retain_only"]["loss"])
    # the with-unlearning loss AUC recomputed directly from the artifact's answer NLLs
    nonmembers = data["world_facts"].sample(n=4, random_state=0).reset_index(drop=True)
    a = membership_scores(model, enc, forget["question"].tolist(), forget["answer"].tolist(), iv, 4, 0.2)["loss"]
    b = membership_scores(model, enc, nonmembers["question"].tolist(), nonmembers["answer"].tolist(), iv, 4, 0.2)["loss"]
    assert mia["with_unlearning"]["loss"] == pytest.approx(membership_auc(a, b))
    md = (tmp_path / "run" / "audit" / "artifact" / "audit.md").read_text()
    assert "injection_prefix" in md and "Membership inference" in md and "retain-only" in md


def test_spul_audit_cli_on_a_generative_run(tmp_path, tiny_model_dir, capsys):
    """``spul audit -c FILE`` reads a qa config as a generative run and audits OUTPUT/artifact."""
    from spul import pipeline_generation as pg
    from spul.configuration import dump_yaml
    from spul.interfaces.cli import main

    cfg = _config(tmp_path, tiny_model_dir, unlearn={"max_steps": 2}, retain_only=False)
    pg.unlearn(cfg, pg.prepare(cfg), str(tiny_model_dir))
    path = tmp_path / "gen.yaml"
    path.write_text(dump_yaml(cfg))
    assert main(["audit", "-c", str(path), "audit.limit=3", "audit.max_new_tokens=3", "audit.families=[original,injection_suffix]"]) == 0
    out = capsys.readouterr().out
    assert "injection_suffix: ROUGE-L forget" in out and "membership AUC" in out
    assert (tmp_path / "run" / "audit" / "artifact" / "audit.json").is_file()
