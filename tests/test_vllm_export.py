"""The vLLM export route: what the export folder holds, and that its client builds exactly spul's prompt.

vLLM itself does not install on this CPU-only machine, so the request is checked up to the wire: the
``prompt_embeds`` the generated client would send, fed to the same model through ``inputs_embeds``, give
spul's own next-token distribution for the soft-prompted, templated input.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import shutil

import pytest
import torch

TEXTS = ["Alice Smith loved this film .", "a dull and boring movie", "the acting was great " * 40, ""]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir, artifacts, monkeypatch_module):
    from spul.interfaces.cli import main

    root = tmp_path_factory.mktemp("vllm")
    shutil.copytree(tiny_model_dir, root / "base")
    monkeypatch_module.chdir(root)  # a relative --model path, recorded absolute
    assert main(["export-vllm", str(artifacts["a"]), str(root / "out"), "--model", "base", "--dtype", "float32"]) == 0
    spec = importlib.util.spec_from_file_location("spul_vllm_client", root / "out" / "client.py")
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    return root / "out", client


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_export_records_template_labels_and_absolute_base(exported, artifacts, tiny_model_dir):
    out, _ = exported
    info = json.loads((out / "vllm.json").read_text())
    meta = json.loads((artifacts["a"] / "spul.json").read_text())
    assert info["base_model"] == str((out.parent / "base").resolve()) and info["base_model"].startswith("/")
    assert info["task"]["template"] == meta["task"]["template"]
    assert info["task"]["label_words"] == meta["task"]["label_words"] and info["task"]["generic_labels"] == meta["task"]["generic_labels"]
    assert info["vllm"]["min_version"] == "0.11.0" and info["vllm"]["api"] == "completions"
    assert info["embedding_parameter"] == "model.embed_tokens.weight"
    readme = (out / "README.md").read_text()
    for words in ("--enable-prompt-embeds", "Completions API only", ">= 0.11.0", "client.py", "### Sentiment:", "unknown"):
        assert words in readme, words
    assert (out / "client.py").is_file()


def test_client_renders_prompts_exactly_as_spul(exported, tiny_model_dir, artifacts):
    from spul.configuration import from_dict
    from spul.data.encoding import TaskEncoder
    from spul.data.tasks import Task, TaskConfig
    from spul.models.loading import ModelConfig, load_model

    _out, client = exported
    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    meta = json.loads((artifacts["a"] / "spul.json").read_text())
    encoder = TaskEncoder(Task(from_dict(TaskConfig, meta["task"])), tok, meta["max_length"])
    client_tok = client.load_tokenizer()
    assert [client.render_ids(client_tok, t) for t in TEXTS] == encoder.encode_prompts(TEXTS)  # incl. a truncated text
    assert client.render_text("x") == encoder.task.prompt("x")
    assert torch.equal(client.embedding_matrix(), model.get_input_embeddings().weight.detach())
    assert client.answer_of(" unknown\n") == "unknown" and client.answer_of("positive.") == "positive" and client.answer_of("maybe") is None


def test_client_payload_reproduces_the_soft_prompted_model(exported, tiny_model_dir, artifacts):
    """The embeddings the client sends give the same next-token logits as spul's soft-prompted forward pass."""
    from spul.artifacts import load_soft_prompt
    from spul.models.forward import hidden_states, lm_logits
    from spul.models.loading import ModelConfig, load_model
    from spul.models.soft_prompt import prompt_vectors

    _out, client = exported
    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    text = TEXTS[0]
    sent = torch.load(io.BytesIO(base64.b64decode(client.encode(client.prompt_embeds(text)))))
    ids = client.render_ids(client.load_tokenizer(), text)
    assert sent.shape == (4 + len(ids), 64)
    with torch.inference_mode():
        via_vllm_route = lm_logits(model, model.model(inputs_embeds=sent.unsqueeze(0)).last_hidden_state[:, -1, :])
        peft_model, _ = load_soft_prompt(model, artifacts["a"])
        t = torch.tensor([ids])
        spul = lm_logits(peft_model, hidden_states(peft_model, t, torch.ones_like(t), prompt_vectors(peft_model, 1, torch.float32))[:, -1, :])
        bare = lm_logits(model, model.model(input_ids=torch.tensor([tok(text).input_ids])).last_hidden_state[:, -1, :])
    assert torch.allclose(via_vllm_route, spul, atol=1e-4)
    assert not torch.allclose(via_vllm_route, bare, atol=1e-2)  # sending the bare text would not be the same model


def test_client_cli_prints_the_prompt(exported, capsys):
    _out, client = exported
    assert client.main(["--print-prompt", "a dull movie"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["prompt"].startswith("### Text: a dull movie") and shown["prompt"].endswith("### Sentiment:")
    assert shown["soft_prompt"] == [4, 64]
