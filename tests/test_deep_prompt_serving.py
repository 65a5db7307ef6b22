"""A deep prompt (``unlearn.prompt_encoder: prefix_tuning``) served by ``spul serve``: its per-layer keys/values
go in front of every request as the decoder's cache, for scoring and for ``generate``, batched with left padding,
and the server's answers equal the in-process ``DeepPrompt`` intervention. The vLLM export refuses it."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch

from conftest import tiny_run_config
from test_serving import Running, _h

TEXTS = ["Alice Smith loved this film .", "a dull and boring movie", "the acting was great", "I hated every minute of it , truly"]
KEY_DEEP, KEY_LOUD, KEY_BASE = "key-deep-prompt-01", "key-loud-prompt-02", "key-research-0003"


@pytest.fixture(scope="module")
def deep(tmp_path_factory, tiny_model_dir):
    from spul.models.loading import ModelConfig, load_model
    from spul.pipeline import unlearn
    from spul.serving.app import ServeConfig, Service
    from spul.serving.policies import KeyTable
    from spul.serving.registry import Registry

    cfg = tiny_run_config(tmp_path_factory.mktemp("deep"), tiny_model_dir, finetune={"enabled": False},
                          data={"limits": {"train_forget": 8, "train_retain": 8, "test_forget": 4, "test_retain": 4}},
                          unlearn={"prompt_encoder": "prefix_tuning", "prompt_length": 4, "learning_rate": 5e-2})
    artifact = unlearn(cfg)
    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    registry = Registry(model, tok, str(tiny_model_dir), max_length=64)
    registry.add("deep", artifact)
    running = Running(Service(registry, KeyTable(keys={KEY_DEEP: "deep", KEY_BASE: "base"}), ServeConfig(max_texts=8, max_new_tokens=8)))
    yield running, artifact
    running.stop()


def _in_process(tiny_model_dir, artifact):
    """A fresh model with the artifact loaded as the evaluation loads it (``DeepPrompt``, applied by its hook)."""
    from spul.methods.registry import load_intervention
    from spul.models.loading import ModelConfig, load_model

    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    return model, tok, load_intervention(artifact, model, tokenizer=tok)


@torch.inference_mode()
def _greedy(model, intervention, ids: list[int], steps: int) -> list[int]:
    """Greedy decoding by whole forwards without a cache, under the in-process intervention's hook."""
    from spul.models.forward import hidden_states, lm_logits

    seq = list(ids)
    with intervention.applied(model, [""], [ids]):
        for _ in range(steps):
            t = torch.tensor([seq])
            seq.append(int(lm_logits(model, hidden_states(model, t, torch.ones_like(t))[:, -1]).argmax(-1)))
    return seq[len(ids):]


def test_served_deep_prompt_scores_as_the_in_process_intervention(deep, tiny_model_dir):
    from spul.data.encoding import TaskEncoder
    from spul.data.tasks import Task, TaskConfig
    from spul.evaluation.evaluate import score_with

    running, artifact = deep
    model, tok, iv = _in_process(tiny_model_dir, artifact)
    assert iv.kind == "spul_deep"
    encoder = TaskEncoder(Task(iv.task_config or TaskConfig()), tok, 64)
    offline = score_with(model, encoder, TEXTS, iv, batch_size=8).loglik
    base = score_with(model, encoder, TEXTS, None, batch_size=8).loglik
    assert not np.allclose(offline, base, atol=1e-3), "the deep prompt must change the scores"
    r = httpx.post(running.url + "/v1/classify", json={"texts": TEXTS}, headers=_h(KEY_DEEP))
    assert r.status_code == 200, r.text
    assert r.json()["policy"] == "deep"
    served = np.array([[res["loglik"][c] for c in encoder.task.candidates] for res in r.json()["results"]])
    np.testing.assert_allclose(served, offline, atol=1e-5)


def test_served_deep_prompt_generates_as_the_in_process_intervention(deep, tiny_model_dir):
    """Greedy continuations, batched with left padding and over HTTP, equal whole-forward greedy decoding under the
    in-process intervention. The trained artifact barely moves the tiny model's argmax, so a louder deep prompt
    (its values x 30, registered beside it) shows the prefix really reaches every decoding step."""
    from spul.interventions import DeepPrompt
    from spul.serving import inference

    running, artifact = deep
    model, tok, iv = _in_process(tiny_model_dir, artifact)
    reg = running.service.registry
    loud_layers = [(k, 30 * v) for k, v in iv.layers]
    reg.add_policy(DeepPrompt("loud", [(k.clone(), v.clone()) for k, v in loud_layers]))
    running.service.keys.keys[KEY_LOUD] = "loud"
    prompts = ["the acting was", "a dull and boring movie , I"]
    ids = [tok(p).input_ids for p in prompts]
    eos = tok.eos_token_id
    bare = [_greedy(model, _Base(), row, 6) for row in ids]
    for name, key, reference in (("deep", KEY_DEEP, iv), ("loud", KEY_LOUD, DeepPrompt("loud", loud_layers))):
        expected = [_greedy(model, reference, row, 6) for row in ids]
        expected = [e[: e.index(eos)] if eos in e else e for e in expected]
        if name == "loud":
            assert expected != bare, "the loud deep prompt must change the continuation"
        # batched, left-padded (rows of different lengths), through the policy's guard as the server runs it
        policy = reg.get(name)
        with policy.guard(reg.model, prompts, ids) as hook:
            got = inference.generate(reg.model, reg.tokenizer, ids, [6, 6], policy.vectors, policy.prefix, row_hook=hook)
        assert got == expected, name
        for prompt, want in zip(prompts, got):
            r = httpx.post(running.url + "/v1/generate", json={"prompt": prompt, "max_new_tokens": 6}, headers=_h(key))
            assert r.status_code == 200, r.text
            assert r.json()["text"] == tok.decode(want, skip_special_tokens=True) and r.json()["tokens"] == len(want), name


class _Base:
    """The base model as an intervention (applies nothing)."""

    def applied(self, model, texts, prompts):
        import contextlib

        return contextlib.nullcontext()


def test_vllm_export_refuses_a_deep_prompt_with_the_reason(deep, tiny_model_dir, tmp_path):
    from spul.errors import ArtifactError
    from spul.models.loading import weights_fingerprint
    from spul.serving.registry import artifact_vectors
    from spul.serving.vllm_export import export_vllm

    _, artifact = deep
    model, tok, iv = _in_process(tiny_model_dir, artifact)
    with pytest.raises(ArtifactError, match="deep prompt.*input layer"):
        artifact_vectors(model, artifact, weights_fingerprint(model))
    with pytest.raises(ArtifactError, match="deep prompt.*input layer"):
        export_vllm(iv, {}, tmp_path / "out", tokenizer=tok)


class _Mentions:
    """A prompt classifier that flags texts containing a word (stands in for ECO's embedding classifier)."""

    def __init__(self, word: str):
        self.word = word

    def flags(self, texts):
        return np.array([self.word in t for t in texts])


def test_gated_deep_prompt_applies_to_flagged_rows_only(deep, tiny_model_dir):
    """``Gated(DeepPrompt, classifier)`` (SPUL gated by ECO's classifier): flagged rows get the deep prompt,
    the others the base model, in evaluation and in the server's cached path alike."""
    from spul.data.encoding import TaskEncoder
    from spul.data.tasks import Task, TaskConfig, TaskKind
    from spul.evaluation.evaluate import score_with
    from spul.interventions import Gated
    from spul.serving import inference

    running, artifact = deep
    model, tok, iv = _in_process(tiny_model_dir, artifact)
    encoder = TaskEncoder(Task(iv.task_config or TaskConfig()), tok, 64)
    gated = Gated("gated", iv, _Mentions("film"))
    flags = gated.flags(TEXTS)
    assert flags.any() and not flags.all()
    both = score_with(model, encoder, TEXTS, gated, batch_size=8).loglik
    deep_only = score_with(model, encoder, TEXTS, iv, batch_size=8).loglik
    base = score_with(model, encoder, TEXTS, None, batch_size=8).loglik
    np.testing.assert_allclose(both[flags], deep_only[flags], atol=1e-5)
    np.testing.assert_allclose(both[~flags], base[~flags], atol=1e-5)
    reg = running.service.registry
    served_gate = Gated("gated", reg.get("deep"), _Mentions("film"))
    enc = running.service.encoders.for_policy(served_gate, TaskKind.CLASSIFICATION)
    prompts = enc.encode_prompts(TEXTS)
    with served_gate.guard(reg.model, TEXTS, prompts) as hook:
        served = inference.score(reg.model, enc, prompts, served_gate.vectors, served_gate.prefix, row_hook=hook)
    np.testing.assert_allclose(served, both, atol=1e-5)
