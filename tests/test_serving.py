"""The serving API end to end: a real uvicorn server on 127.0.0.1 over the tiny Llama and real SPUL artifacts."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import numpy as np
import pytest
import torch

KEY_A, KEY_B, KEY_BASE, ADMIN = "key-app-a-0001", "key-app-b-0002", "key-research-0003", "admin-key-0004"
TEXTS = ["Alice Smith loved this film .", "a dull and boring movie", "the acting was great", "I hated every minute"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A uvicorn server in a background thread."""

    def __init__(self, service):
        import uvicorn

        from spul.serving.app import create_app

        self.service = service
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


def _service(tiny_model_dir, artifacts, prefix_cache=True, **batch):
    from spul.models.loading import ModelConfig, load_model
    from spul.serving.app import ServeConfig, Service
    from spul.serving.batching import BatchConfig
    from spul.serving.policies import KeyTable
    from spul.serving.registry import Registry

    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    registry = Registry(model, tok, str(tiny_model_dir), prefix_cache=prefix_cache, max_length=64)
    errors = registry.load_startup({"a": str(artifacts["a"]), "foreign": str(artifacts["foreign"])})
    assert len(errors) == 1 and "foreign" in errors[0] and "fingerprint" in errors[0]
    keys = KeyTable(keys={KEY_A: "a", KEY_B: "b", KEY_BASE: "base"}, admin_keys=[ADMIN])
    return Service(registry, keys, ServeConfig(max_texts=8, max_chars=500, max_new_tokens=8, batch=BatchConfig(**batch),
                                               artifact_root=str(artifacts["root"])))


@pytest.fixture(scope="session")
def server(tiny_model_dir, artifacts):
    running = Running(_service(tiny_model_dir, artifacts))
    yield running
    running.stop()


def _h(key):
    return {"Authorization": f"Bearer {key}"}


def _offline(tiny_model_dir, artifact, texts, task_config=None):
    """What spul.evaluation.scoring computes offline, through the PEFT model like ``spul evaluate``."""
    from spul.artifacts import load_soft_prompt
    from spul.data.encoding import TaskEncoder
    from spul.data.tasks import Task, TaskConfig
    from spul.evaluation.scoring import score_texts
    from spul.models.loading import ModelConfig, load_model
    from spul.models.soft_prompt import prompt_vectors

    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    encoder = TaskEncoder(Task(task_config or TaskConfig()), tok, 64)
    if artifact is None:
        return score_texts(model, encoder, texts).loglik, encoder
    peft_model, _ = load_soft_prompt(model, artifact)
    provider = lambda n, rows: (prompt_vectors(peft_model, n, torch.float32), None)
    return score_texts(peft_model, encoder, texts, prompt_provider=provider).loglik, encoder


def _loglik(result, encoder):
    return np.array([result["loglik"][c] for c in encoder.task.candidates])


def test_classify_matches_offline_scoring(server, tiny_model_dir, artifacts):
    for key, artifact in ((KEY_A, artifacts["a"]), (KEY_BASE, None)):
        r = httpx.post(server.url + "/v1/classify", json={"texts": TEXTS}, headers=_h(key))
        assert r.status_code == 200, r.text
        offline, encoder = _offline(tiny_model_dir, artifact, TEXTS)
        for row, res in zip(offline, r.json()["results"]):
            np.testing.assert_allclose(_loglik(res, encoder), row, atol=1e-4)
            assert res["label"] == encoder.task.candidates[int(row.argmax())]
    # the two policies really differ
    a = httpx.post(server.url + "/v1/classify", json={"texts": TEXTS}, headers=_h(KEY_A)).json()
    base = httpx.post(server.url + "/v1/classify", json={"texts": TEXTS}, headers=_h(KEY_BASE)).json()
    assert a["policy"] == "a" and base["policy"] == "base" and a["results"] != base["results"]


def test_prefix_cache_matches_recomputation(server):
    from spul.serving import inference

    reg = server.service.registry
    policy = reg.get("a")
    encoder = server.service.encoders.for_policy(policy, __import__("spul.data.tasks", fromlist=["TaskKind"]).TaskKind.CLASSIFICATION)
    prompts = encoder.encode_prompts(TEXTS) + [p + p[:3] for p in encoder.encode_prompts(TEXTS[:2])]
    cached = inference.score(reg.model, encoder, prompts, policy.vectors, policy.prefix)
    plain = inference.score(reg.model, encoder, prompts, policy.vectors, None)
    np.testing.assert_allclose(cached, plain, atol=1e-5)
    ids = [reg.tokenizer("the acting was").input_ids, reg.tokenizer("a dull and boring movie , I").input_ids]
    assert inference.generate(reg.model, reg.tokenizer, ids, [6, 3], policy.vectors, policy.prefix) == \
        inference.generate(reg.model, reg.tokenizer, ids, [6, 3], policy.vectors, None)


def test_uncached_server_matches_too(tiny_model_dir, artifacts):
    running = Running(_service(tiny_model_dir, artifacts, prefix_cache=False))
    try:
        r = httpx.post(running.url + "/v1/classify", json={"texts": TEXTS}, headers=_h(KEY_A))
        offline, encoder = _offline(tiny_model_dir, artifacts["a"], TEXTS)
        got = np.stack([_loglik(res, encoder) for res in r.json()["results"]])
        np.testing.assert_allclose(got, offline, atol=1e-5)
    finally:
        running.stop()


def test_policy_is_enforced(server):
    url = server.url + "/v1/classify"
    assert httpx.post(url, json={"texts": TEXTS}).status_code == 401
    assert httpx.post(url, json={"texts": TEXTS}, headers=_h("wrong-key-123456")).status_code == 401
    own = httpx.post(url, json={"texts": TEXTS}, headers=_h(KEY_A)).json()
    # asking for no prompt / another policy changes nothing: the key decides
    sneaky = httpx.post(url, json={"texts": TEXTS, "policy": "base", "artifact": None, "soft_prompt": False}, headers={"X-API-Key": KEY_A}).json()
    assert sneaky == own
    # a key bound to an artifact that is not loaded fails closed instead of falling back to the base model
    r = httpx.post(url, json={"texts": TEXTS}, headers=_h(KEY_B))
    assert r.status_code == 503 and "'b'" in r.json()["detail"]


def test_multiple_choice_and_generate(server, tiny_model_dir):
    from spul.data.tasks import format_multiple_choice, multiple_choice_task_config

    body = {"question": "Which is a film ?", "choices": ["movie", "acting", "boring", "great"]}
    r = httpx.post(server.url + "/v1/multiple-choice", json=body, headers=_h(KEY_BASE))
    assert r.status_code == 200, r.text
    text = format_multiple_choice(body["question"], body["choices"], ["A", "B", "C", "D"])
    offline, encoder = _offline(tiny_model_dir, None, [text], multiple_choice_task_config())
    assert r.json()["answer"] == encoder.task.candidates[int(offline[0].argmax())]
    bad = httpx.post(server.url + "/v1/multiple-choice", json={"question": "q", "choices": ["x", "y"]}, headers=_h(KEY_BASE))
    assert bad.status_code == 422
    g = httpx.post(server.url + "/v1/generate", json={"prompt": "the acting was", "max_new_tokens": 5}, headers=_h(KEY_A))
    assert g.status_code == 200 and g.json()["tokens"] <= 5 and g.json()["policy"] == "a"
    assert httpx.post(server.url + "/v1/generate", json={"prompt": "the", "max_new_tokens": 500}, headers=_h(KEY_A)).status_code == 422


def test_request_limits(server):
    url = server.url + "/v1/classify"
    assert httpx.post(url, json={"texts": ["a"] * 9}, headers=_h(KEY_A)).status_code == 413
    r = httpx.post(url, json={"texts": ["a" * 501]}, headers=_h(KEY_A))
    assert r.status_code == 413 and "limit is 500" in r.json()["detail"]
    assert httpx.post(url, json={"texts": []}, headers=_h(KEY_A)).status_code == 422
    assert httpx.post(url, json={"text": "x"}, headers=_h(KEY_A)).status_code == 422
    assert httpx.post(url, content=b"x" * 1_000_001, headers={**_h(KEY_A), "content-type": "application/json"}).status_code == 413


def test_artifacts_added_and_removed_at_runtime(server, artifacts):
    url = server.url + "/v1/artifacts"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers=_h(KEY_A)).status_code == 403
    names = [a["name"] for a in httpx.get(url, headers=_h(ADMIN)).json()["artifacts"]]
    assert names == ["a", "base"]
    for bad, code, words in (("foreign", 400, "fingerprint"), ("broken", 400, "could not be loaded"), ("root", 400, "spul.json")):
        r = httpx.post(url, json={"name": "x", "path": str(artifacts[bad])}, headers=_h(ADMIN))
        assert r.status_code == code and words in r.json()["detail"] and "\n" not in r.json()["detail"], r.text
    assert httpx.post(url, json={"name": "base", "path": str(artifacts["b"])}, headers=_h(ADMIN)).status_code == 422
    r = httpx.post(url, json={"name": "b", "path": str(artifacts["b"])}, headers=_h(ADMIN))
    assert r.status_code == 201 and r.json()["prompt_length"] == 4
    c = httpx.post(server.url + "/v1/classify", json={"texts": TEXTS}, headers=_h(KEY_B))
    assert c.status_code == 200 and c.json()["policy"] == "b"
    a = httpx.post(server.url + "/v1/classify", json={"texts": TEXTS}, headers=_h(KEY_A)).json()
    assert a["results"] != c.json()["results"]
    assert httpx.delete(url + "/b", headers=_h(ADMIN)).json() == {"removed": "b"}
    assert httpx.delete(url + "/b", headers=_h(ADMIN)).status_code == 404
    assert httpx.post(server.url + "/v1/classify", json={"texts": TEXTS}, headers=_h(KEY_B)).status_code == 503


def test_health_and_openapi(server):
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    assert {"/v1/classify", "/v1/multiple-choice", "/v1/generate", "/v1/artifacts", "/health"} <= set(paths)


async def _burst(url: str, n: int, key: str, concurrency_limit: int | None = None):
    limits = httpx.Limits(max_connections=concurrency_limit or n, max_keepalive_connections=concurrency_limit or n)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def one(i):
            t = time.perf_counter()
            r = await client.post(url + "/v1/classify", json={"texts": [TEXTS[i % len(TEXTS)]]}, headers=_h(key))
            return r.status_code, time.perf_counter() - t
        return await asyncio.gather(*(one(i) for i in range(n)))


def test_200_concurrent_requests(server):
    before, model_before = server.service.batcher.batches_run, server.service.batcher.model_seconds
    results = asyncio.run(_burst(server.url, 200, KEY_A))
    codes = [c for c, _ in results]
    assert codes == [200] * 200
    lat = np.array([t for _, t in results]) * 1000
    batches = server.service.batcher.batches_run - before
    print(f"\n200 concurrent classify requests: p50 {np.percentile(lat, 50):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms, "
          f"p99 {np.percentile(lat, 99):.0f} ms, {batches} batches, {server.service.batcher.model_seconds - model_before:.2f} s in the model")
    assert batches < 200  # requests were grouped


def test_tiny_queue_answers_busy(tiny_model_dir, artifacts):
    running = Running(_service(tiny_model_dir, artifacts, max_queue=1, max_batch=1, max_wait_ms=0))
    try:
        codes = [c for c, _ in asyncio.run(_burst(running.url, 40, KEY_A))]
        assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) > 0
        assert running.service.batcher.queue.qsize() <= 1
    finally:
        running.stop()


def test_eco_artifact_plugs_in_as_a_policy(server, tiny_model_dir, artifacts):
    """An ECO artifact loads as a policy; only the rows its classifier flags are corrupted, in any batch order."""
    from spul.artifacts import save_artifact
    from spul.configuration import to_dict
    from spul.data.tasks import TaskConfig

    folder = save_artifact(None, artifacts["root"] / "eco", {
        "method": "eco", "base_model": str(tiny_model_dir), "base_fingerprint": server.service.registry.fingerprint,
        "task": to_dict(TaskConfig()),
        "classifier": {"kind": "embedding_logistic_regression", "encoder": "toy", "weights": [1.0], "bias": 0.0,
                       "threshold": 0.5, "inclusive": False, "info": {}},
        "corruption": {"name": "noise", "dims": 0, "select": "first", "sigma": 5.0, "seed": 0},
    })
    r = httpx.post(server.url + "/v1/artifacts", json={"name": "eco", "path": str(folder)}, headers=_h(ADMIN))
    assert r.status_code == 201 and r.json()["kind"] == "eco", r.text
    policy = server.service.registry.get("eco")
    # the classifier's sentence encoder is swapped for a keyword feature (no download in tests)
    policy.classifier.embedder = lambda texts: np.array([[10.0 if "Alice" in t else -10.0] for t in texts])
    server.service.keys.keys["key-eco-00000005"] = "eco"
    try:
        texts = ["the acting was great", "Alice Smith loved this film .", "I hated every minute"]
        eco = httpx.post(server.url + "/v1/classify", json={"texts": texts}, headers=_h("key-eco-00000005")).json()
        base = httpx.post(server.url + "/v1/classify", json={"texts": texts}, headers=_h(KEY_BASE)).json()
        assert eco["policy"] == "eco"
        assert eco["results"][0] == base["results"][0] and eco["results"][2] == base["results"][2]
        assert eco["results"][1]["loglik"] != base["results"][1]["loglik"]
        g = httpx.post(server.url + "/v1/generate", json={"prompt": "Alice Smith loved", "max_new_tokens": 3}, headers=_h("key-eco-00000005"))
        assert g.status_code == 200
    finally:
        del server.service.keys.keys["key-eco-00000005"]
        httpx.delete(server.url + "/v1/artifacts/eco", headers=_h(ADMIN))


def test_vllm_export_round_trip(tmp_path, server, artifacts, tiny_model_dir, capsys):
    import base64
    import io

    from spul.interfaces.cli import main
    from spul.serving.vllm_export import load_exported, prompt_embeds_payload

    out = tmp_path / "vllm"
    assert main(["export-vllm", str(artifacts["a"]), str(out), "--dtype", "float32"]) == 0
    soft = load_exported(out)
    expected = server.service.registry.get("a").vectors
    assert soft.shape == (4, 64) and soft.dtype == torch.float32 and torch.equal(soft, expected)
    info = json.loads((out / "vllm.json").read_text())
    assert info["shape"] == [4, 64] and info["dtype"] == "float32" and "--enable-prompt-embeds" in (out / "README.md").read_text()
    tokens = torch.randn(5, 64)
    sent = torch.load(io.BytesIO(base64.b64decode(prompt_embeds_payload(soft, tokens))))
    assert sent.shape == (9, 64) and torch.equal(sent[:4], soft) and torch.equal(sent[4:], tokens)
    # bf16 export keeps the model dtype
    assert main(["export-vllm", str(artifacts["a"]), str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    assert load_exported(tmp_path / "bf16").dtype == torch.bfloat16
    assert main(["export-vllm", str(artifacts["foreign"]), str(tmp_path / "x"), "--model", str(tiny_model_dir)]) != 0
    assert "fingerprint" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_keys_file_and_cli_arguments(tmp_path):
    from spul.errors import ConfigError
    from spul.interfaces.commands.serve import _artifact_pairs
    from spul.serving.policies import KeyTable

    path = tmp_path / "keys.yaml"
    path.write_text("admin_keys: [admin-key-0004]\nkeys:\n  key-app-a-0001: a\n  key-research-0003: base\n")
    table = KeyTable.load(path)
    assert table.policy_of("key-app-a-0001") == "a" and table.policy_of("nope") is None and table.is_admin("admin-key-0004")
    path.write_text("keys:\n  short: a\n")
    with pytest.raises(ConfigError, match="shorter than 8"):
        KeyTable.load(path)
    path.write_text("users: {}\n")
    with pytest.raises(ConfigError, match="only 'keys' and 'admin_keys'"):
        KeyTable.load(path)
    assert _artifact_pairs(["a=/x", "b=/y=z"]) == {"a": "/x", "b": "/y=z"}
    with pytest.raises(ConfigError, match="NAME=FOLDER"):
        _artifact_pairs(["nofolder"])


def test_serve_command_builds_the_service(tmp_path, tiny_model_dir, artifacts, capsys):
    from spul.interfaces.cli import build_parser
    from spul.interfaces.commands.serve import build_service

    keys = tmp_path / "keys.yaml"
    keys.write_text(f"admin_keys: [{ADMIN}]\nkeys:\n  {KEY_A}: a\n  {KEY_B}: b\n")
    args = build_parser().parse_args(["serve", "--model", str(tiny_model_dir), "--keys", str(keys), "--dtype", "float32",
                                      "--device", "cpu", "--max-length", "64", "--max-queue", "4",
                                      "--artifact", f"a={artifacts['a']}", "--artifact", f"bad={artifacts['broken']}"])
    service = build_service(args)
    out = capsys.readouterr().out
    assert service.registry.names() == ["a", "base"] and service.config.batch.max_queue == 4
    assert "artifact refused" in out and "bad" in out and "['b']" in out
