"""OpenAI-compatible serving, through the official ``openai`` client against a loopback uvicorn server.

Generation runs through ``model.generate`` with the soft prompt as a cached key/value prefix; these tests
check it against a plain recompute-everything greedy loop, and the HTTP answers against direct calls.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch
from test_serving import KEY_A, KEY_B, KEY_BASE, Running, _service

openai = pytest.importorskip("openai")

CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant :{% endif %}")


@pytest.fixture(scope="module")
def oa_server(tiny_model_dir, artifacts):
    service = _service(tiny_model_dir, artifacts)
    service.registry.tokenizer.chat_template = CHAT_TEMPLATE
    running = Running(service)
    yield running
    running.stop()


def _client(server, key=KEY_A):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)


def _direct(server, ids, policy_name, limit, **sampling):
    """What the model computes for ``ids`` under ``policy_name``, without HTTP."""
    from spul.serving import inference

    reg = server.service.registry
    policy = reg.get(policy_name)
    out = inference.generate(reg.model, reg.tokenizer, [ids], [limit], policy.vectors, policy.prefix,
                             sampling=inference.Sampling(**sampling))[0]
    return reg.tokenizer.decode(out, skip_special_tokens=True), out


@torch.inference_mode()
def _reference_greedy(model, ids, limit, vectors, eos):
    """Greedy decoding the slow obvious way: the whole sequence (soft prompt in front) re-run every step."""
    from spul.models.forward import hidden_states, lm_logits

    seq, out = list(ids), []
    for _ in range(limit):
        t = torch.tensor([seq])
        prompt = None if vectors is None else vectors.unsqueeze(0)
        hidden = hidden_states(model, t, torch.ones_like(t), prompt)
        nxt = int(lm_logits(model, hidden[:, -1, :]).argmax(-1))
        if nxt == eos:
            break
        out.append(nxt)
        seq.append(nxt)
    return out


def test_generate_matches_a_plain_greedy_loop(oa_server):
    from spul.serving import inference

    reg = oa_server.service.registry
    tok, policy = reg.tokenizer, reg.get("a")
    prompts = [tok("the acting was great").input_ids, tok("Alice").input_ids, tok("I hated every minute of this dull movie").input_ids]
    limits = [7, 3, 9]
    for vectors, prefix in ((None, None), (policy.vectors, policy.prefix), (policy.vectors, None)):
        got = inference.generate(reg.model, tok, prompts, limits, vectors, prefix)
        want = [_reference_greedy(reg.model, p, n, vectors, tok.eos_token_id) for p, n in zip(prompts, limits)]
        assert got == want


def test_completions_with_the_official_client(oa_server):
    client = _client(oa_server)
    assert [m.id for m in client.models.list().data] == ["a"]
    r = client.completions.create(model="a", prompt="the acting was", max_tokens=6, temperature=0)
    ids = oa_server.service.registry.tokenizer("the acting was").input_ids
    text, tokens = _direct(oa_server, ids, "a", 6)
    assert r.choices[0].text == text and r.usage.completion_tokens == len(tokens) and r.usage.prompt_tokens == len(ids)
    assert r.model == "a" and r.choices[0].finish_reason in ("length", "stop")
    # the same request under the base model's key gets the base model's continuation
    base = _client(oa_server, KEY_BASE).completions.create(model="base", prompt="the acting was", max_tokens=6, temperature=0)
    assert base.choices[0].text == _direct(oa_server, ids, "base", 6)[0]
    # also equal to the native /v1/generate route
    g = httpx.post(oa_server.url + "/v1/generate", json={"prompt": "the acting was", "max_new_tokens": 6},
                   headers={"Authorization": f"Bearer {KEY_A}"}).json()
    assert g["text"] == text


def test_streaming_equals_the_whole_answer(oa_server):
    client = _client(oa_server)
    whole = client.completions.create(model="a", prompt="Alice Smith loved", max_tokens=8, temperature=0)
    chunks = list(client.completions.create(model="a", prompt="Alice Smith loved", max_tokens=8, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    chat = list(client.chat.completions.create(model="a", messages=[{"role": "user", "content": "the acting was great"}],
                                               max_tokens=6, temperature=0, stream=True))
    assert chat[0].choices[0].delta.role == "assistant" and chat[-1].choices[0].finish_reason in ("length", "stop")
    whole_chat = client.chat.completions.create(model="a", messages=[{"role": "user", "content": "the acting was great"}],
                                                max_tokens=6, temperature=0)
    assert "".join(c.choices[0].delta.content or "" for c in chat) == whole_chat.choices[0].message.content


def test_chat_uses_the_chat_template(oa_server):
    tok = oa_server.service.registry.tokenizer
    messages = [{"role": "system", "content": "negative or positive ?"}, {"role": "user", "content": "the acting was great"}]
    r = _client(oa_server).chat.completions.create(model="a", messages=messages, max_tokens=5, temperature=0)
    rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered.endswith("assistant :")
    text, _ = _direct(oa_server, tok(rendered, add_special_tokens=False).input_ids, "a", 5)
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == text


def test_sampling_seed_and_stop_strings(oa_server):
    client = _client(oa_server)
    kwargs = {"model": "a", "prompt": "the film", "max_tokens": 8, "temperature": 1.0, "top_p": 0.95, "seed": 11}
    first, second = (client.completions.create(**kwargs).choices[0].text for _ in range(2))
    assert first == second  # a seeded request is reproducible, whatever shares its batch
    others = {client.completions.create(**{**kwargs, "seed": s}).choices[0].text for s in range(12, 18)}
    assert len(others | {first}) > 1  # and it is sampling: other seeds give other texts
    ids = oa_server.service.registry.tokenizer("the film").input_ids
    assert first == _direct(oa_server, ids, "a", 8, temperature=1.0, top_p=0.95, seed=11)[0]
    # a stop string ends the text before it, as in OpenAI's API (same seed: the same tokens up to the stop)
    stop = next((w for w in first.split() if first.find(w) > 0), None)
    assert stop is not None, first  # a word that first occurs after the start of the text
    r = client.completions.create(**kwargs, stop=[stop, "never-seen-here"])
    assert r.choices[0].text == first[: first.find(stop)] and r.choices[0].text and r.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(**kwargs, stop=stop, stream=True))
    assert streamed == r.choices[0].text


def test_keys_not_model_names_choose_the_policy(oa_server):
    with pytest.raises(openai.AuthenticationError):
        _client(oa_server, "not-a-key-000").completions.create(model="a", prompt="the film", max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        list(_client(oa_server, "not-a-key-000").chat.completions.create(model="a", messages=[{"role": "user", "content": "x"}], stream=True))
    with pytest.raises(openai.AuthenticationError):
        _client(oa_server, "not-a-key-000").models.list()
    # a key bound to an artifact cannot reach the base model by naming it
    with pytest.raises(openai.NotFoundError, match="use model='a'"):
        _client(oa_server).completions.create(model="base", prompt="the film", max_tokens=2)
    # a key whose artifact is not loaded fails closed
    with pytest.raises(openai.APIStatusError) as err:
        _client(oa_server, KEY_B).completions.create(model="b", prompt="the film", max_tokens=2)
    assert err.value.status_code == 503


def test_unsupported_requests_get_clear_400s(oa_server):
    client = _client(oa_server)
    for kwargs, words in (({"n": 2}, "n=2"), ({"max_tokens": 500}, "cap of 8"), ({"logprobs": 2}, "logprobs"),
                          ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"temperature": 3}, "temperature"),
                          ({"echo": True}, "echo"), ({"frequency_penalty": 1.0}, "penalty")):
        with pytest.raises(openai.BadRequestError, match=words):
            client.completions.create(model="a", prompt="the film", **kwargs)
    with pytest.raises(openai.BadRequestError, match="n=3"):
        client.chat.completions.create(model="a", messages=[{"role": "user", "content": "x"}], n=3)
    r = httpx.post(oa_server.url + "/v1/completions", content=b"{not json", headers={"Authorization": f"Bearer {KEY_A}"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(oa_server.url + "/v1/completions", json={"model": "a", "prompt": "x" * 501}, headers={"Authorization": f"Bearer {KEY_A}"})
    assert r.status_code == 413 and "limit is 500" in r.json()["error"]["message"]


def test_no_chat_template_is_a_clear_400(tiny_model_dir, artifacts):
    running = Running(_service(tiny_model_dir, artifacts))
    try:
        with pytest.raises(openai.BadRequestError, match="no chat template"):
            _client(running).chat.completions.create(model="a", messages=[{"role": "user", "content": "x"}])
    finally:
        running.stop()


def test_eco_generation_corrupts_the_prefill_only(oa_server):
    """Through ``model.generate`` an ECO guard corrupts flagged prompts once (prefill), never the decode steps."""
    from spul.interventions import Gated
    from spul.interventions.corruption import Corruption, CorruptionConfig, EmbeddingCorruption, EmbeddingGuard
    from spul.serving.batching import Job, JobKind
    from spul.serving.generation import run_generation

    class Keyword:  # the prompt classifier's decision, without a sentence encoder
        def flags(self, texts):
            return np.array(["Alice" in t for t in texts])

    reg = oa_server.service.registry
    guard = EmbeddingGuard(Corruption(CorruptionConfig(name="noise", dims=0, select="first", sigma=5.0, seed=0)),
                           pad_token_id=reg.tokenizer.pad_token_id)
    eco = Gated("eco", EmbeddingCorruption("eco", guard), Keyword(), kind="eco")
    texts = ["the acting was great", "Alice Smith loved this film ."]
    jobs = [Job(JobKind.GENERATE, eco, [(reg.tokenizer(t).input_ids, 6, t)]) for t in texts]
    out = run_generation(reg.model, reg.tokenizer, eco, jobs)
    base = run_generation(reg.model, reg.tokenizer, reg.get("base"), jobs)
    assert guard.calls == 1  # one corrupted forward: the batch's prefill
    assert out[0] == base[0] and out[1] != base[1]


def test_dockerfile_runs_spul_serve():
    """Docker cannot run here; the Dockerfile's entrypoint and the extras it installs are checked."""
    import json as _json
    import re
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    root = Path(__file__).resolve().parents[1]
    text = (root / "Dockerfile").read_text()
    entry = _json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.MULTILINE).group(1))
    assert entry[:2] == ["spul", "serve"] and "--host" in entry
    extras = set(tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    assert set(re.findall(r'pip install "\.\[([a-z,]+)\]"', text)[0].split(",")) <= extras
    assert re.search(r'pip install "torch==\$\{TORCH_VERSION\}"', text)  # pinned, never an unpinned torch
    from spul.interfaces.cli import build_parser

    args = build_parser().parse_args(entry[1:] + ["--model", "m", "--keys", "k.yaml"])
    assert args.host == "0.0.0.0" and args.port == 8000
