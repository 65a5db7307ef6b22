"""Serving generative artifacts: a SPUL soft prompt and a LoRA artifact (GA+GD) trained on generative QA, served
on one frozen tiny model through the OpenAI-compatible API. Each key's policy changes the generated text for its
own requests only, equal to generating directly under that artifact; streaming gives the same text."""

from __future__ import annotations

import threading

import pytest
from test_generation_pipeline import _config
from test_serving import ADMIN, KEY_A, KEY_B, KEY_BASE, Running

openai = pytest.importorskip("openai")
MAX_TOKENS = 8
KEY_ECO = "key-eco-gen-0005"
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant :{% endif %}")


@pytest.fixture(scope="module")
def gen_server(tmp_path_factory):
    from spul import pipeline_generation as pg
    from spul.models.loading import ModelConfig, load_model
    from spul.serving.app import ServeConfig, Service
    from spul.serving.batching import BatchConfig
    from spul.serving.policies import KeyTable
    from spul.serving.registry import Registry
    from spul.testing import build_tiny_llama, default_corpus

    root = tmp_path_factory.mktemp("gen-serving")
    data = pg.prepare(_config(root / "data", "unused"))
    # a tiny random model whose vocabulary holds the QA data's words (the shared one turns most of them into <unk>);
    # the general-knowledge set stays out: a larger vocabulary flattens this random model's logits so far that a
    # 20-epoch prompt no longer changes its greedy text (which the checks below need)
    corpus = default_corpus() + [str(v) for name, df in data if name != "general" for col in ("question", "answer") if col in df
                                 for v in df[col]] + ["I don't know."]
    tiny_model_dir = build_tiny_llama(root / "llama", corpus=corpus)
    spul_cfg = _config(root / "spul", tiny_model_dir, unlearn={"learning_rate": 1e-1, "num_epochs": 20}, task={"refusals": ["I don't know."]})
    spul_artifact = pg.unlearn(spul_cfg, data, str(tiny_model_dir))
    lora_cfg = _config(root / "lora", tiny_model_dir, unlearn={"method": "ga_gd", "learning_rate": 5e-2, "num_epochs": 4, "batch_size": 8,
                                                               "lora_r": 4, "progress_bar": False, "save_steps": 1000})
    lora_artifact = pg.unlearn(lora_cfg, pg.prepare(lora_cfg), str(tiny_model_dir))
    # ECO with a fixed strong σ (no search, so no retain-only model needed): the classifier decides per request
    eco_cfg = _config(root / "eco", tiny_model_dir, unlearn={"method": "eco", "search": {"enabled": False},
                                                             "corruption": {"name": "noise", "sigma": 5.0, "dims": 0},
                                                             "classifier": {"conformal": "none", "threshold": 0.5}})
    eco_artifact = pg.unlearn(eco_cfg, pg.prepare(eco_cfg), str(tiny_model_dir))
    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    tok.chat_template = CHAT_TEMPLATE
    registry = Registry(model, tok, str(tiny_model_dir), max_length=64)
    assert registry.load_startup({"spul": str(spul_artifact), "lora": str(lora_artifact), "eco": str(eco_artifact)}) == []
    keys = KeyTable(keys={KEY_A: "spul", KEY_B: "lora", KEY_BASE: "base", KEY_ECO: "eco"}, admin_keys=[ADMIN])
    service = Service(registry, keys, ServeConfig(max_texts=8, max_chars=500, max_new_tokens=MAX_TOKENS, batch=BatchConfig(),
                                                  artifact_root=str(root)))
    encoder = pg.encoder_for(spul_cfg, tok)
    running = Running(service)
    # forget questions whose greedy text both artifacts change (a random tiny model ignores some prompts), so that
    # "the key's policy changes its text" is a real check; found without the server
    prompts = [p for p in (encoder.prompt_text(q) for q in data["forget"]["question"].tolist())
               if _direct(running, "spul", p) != _direct(running, "base", p) != _direct(running, "lora", p) != _direct(running, "spul", p)]
    assert len(prompts) >= 2
    running.data = data
    yield running, prompts
    running.stop()


def _client(server, key):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)


def _complete(server, key, model, prompt, **kw):
    return _client(server, key).completions.create(model=model, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0, **kw)


def _direct(server, policy_name: str, prompt: str) -> str:
    """Greedy generation under the named artifact without the server: ``spul.models.generation`` with the soft
    prompt as input embeddings (not the server's key/value prefix), or the LoRA delta applied by its hooks."""
    from spul.models.generation import DecodingConfig, generate_ids

    reg = server.service.registry
    policy, tok = reg.get(policy_name), reg.tokenizer
    ids = tok(prompt).input_ids
    decoding = DecodingConfig(max_new_tokens=MAX_TOKENS)
    with policy.applied(reg.model, [prompt], [ids]):
        out = generate_ids(reg.model, [ids], pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, decoding=decoding,
                           soft_prompt=policy.vectors)[0]
    return tok.decode(out, skip_special_tokens=True)


def test_each_key_gets_its_own_artifacts_generation(gen_server):
    server, prompts = gen_server
    reg = server.service.registry
    assert reg.get("spul").kind == "spul" and reg.get("lora").kind == "lora"
    for prompt in prompts:
        base = _complete(server, KEY_BASE, "base", prompt).choices[0].text
        spul = _complete(server, KEY_A, "spul", prompt).choices[0].text
        lora = _complete(server, KEY_B, "lora", prompt).choices[0].text
        assert base == _direct(server, "base", prompt)
        assert spul == _direct(server, "spul", prompt) and spul != base
        assert lora == _direct(server, "lora", prompt) and lora != base
    # a key chooses its policy, whatever model name it asks for: the base key cannot reach an artifact
    with pytest.raises(openai.APIStatusError):
        _complete(server, KEY_BASE, "spul", prompts[0])


def test_concurrent_keys_do_not_mix_their_policies(gen_server):
    """Requests of three keys at once (batched together by the server) each get their own policy's text."""
    server, prompts = gen_server
    calls = [(KEY_A, "spul"), (KEY_B, "lora"), (KEY_BASE, "base")] * 2
    want = {name: _direct(server, name, prompts[0]) for _, name in calls}
    got: dict[int, str] = {}

    def call(i, key, name):
        got[i] = _complete(server, key, name, prompts[0]).choices[0].text

    threads = [threading.Thread(target=call, args=(i, k, n)) for i, (k, n) in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [got[i] for i in range(len(calls))] == [want[n] for _, n in calls]


@pytest.mark.parametrize("key,name", [(KEY_A, "spul"), (KEY_B, "lora")])
def test_streaming_a_generative_artifact(gen_server, key, name):
    server, prompts = gen_server
    whole = _complete(server, key, name, prompts[1])
    chunks = list(_complete(server, key, name, prompts[1], stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len([c for c in chunks if c.choices and c.choices[0].text]) > 1  # token by token, not one block


def test_eco_key_corrupts_flagged_questions_only(gen_server):
    """Chat requests under the ECO key: the classifier (trained on forget vs retain questions) sees the user's
    question; flagged questions get a corrupted prefill and another answer, unflagged ones the base model's answer."""
    server, _ = gen_server
    eco = server.service.registry.get("eco")
    assert eco.kind == "eco"
    questions = server.data["forget"]["question"].tolist() + server.data["retain"]["question"].tolist()[:6]
    flags = eco.flags(questions)
    assert flags[: len(server.data["forget"])].any() and not flags[len(server.data["forget"]):].all()

    def chat(key, model, q):
        return _client(server, key).chat.completions.create(model=model, messages=[{"role": "user", "content": q}], max_tokens=MAX_TOKENS,
                                                            temperature=0).choices[0].message.content

    changed = {bool(f): [] for f in flags}
    for q, f in zip(questions, flags):
        changed[bool(f)].append(chat(KEY_ECO, "eco", q) != chat(KEY_BASE, "base", q))
    assert not any(changed.get(False, [])), "an unflagged question was changed"
    assert any(changed[True]), "no flagged question was changed"
