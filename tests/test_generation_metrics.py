"""Generative metrics on hand-made cases and on tiny real models; generation with a token limit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spul.evaluation import generation_metrics as gm
from spul.models.generation import DecodingConfig, generate_ids

# ---- pure metrics ---------------------------------------------------------------------------------------


def test_rouge_l_recall_hand_cases():
    assert gm.rouge_l_recall("Ada was born in Lisbon.", "Ada was born in Lisbon.") == 1.0
    assert gm.rouge_l_recall("nothing alike here", "Ada was born in Lisbon.") == 0.0
    # LCS of "ada lisbon" with the 5-word reference is 2 words: recall 2/5, precision 2/2
    score = gm.rouge_l("Ada Lisbon", "Ada was born in Lisbon")
    assert score["recall"] == pytest.approx(0.4) and score["precision"] == pytest.approx(1.0)
    assert score["f1"] == pytest.approx(2 * 0.4 / 1.4)


def test_probability_and_truth_ratio_by_hand():
    assert gm.normalised_probability([0.5, 1.5]) == pytest.approx(math.exp(-1.0))
    # paraphrased mean NLL 0.5, perturbed mean NLLs 1.0 and 2.0
    expected = ((math.exp(-1.0) + math.exp(-2.0)) / 2) / math.exp(-0.5)
    assert gm.truth_ratio(0.5, [1.0, 2.0]) == pytest.approx(expected)
    assert gm.truth_ratio(0.5, [1.0, 2.0], geometric=True) == pytest.approx(math.exp(0.5 - 1.5))
    ratios = [0.5, 2.0, 1.0]
    assert gm.truth_ratio_score(ratios, forget=True) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert gm.truth_ratio_score(ratios, forget=False) == pytest.approx((0.5 + 0.0 + 0.0) / 3)
    with pytest.raises(ValueError):
        gm.truth_ratio(0.5, [])


def test_forget_quality_and_utility():
    same = [0.2, 0.5, 0.9, 1.3, 0.7]
    assert gm.forget_quality(same, list(same))["forget_quality"] == pytest.approx(1.0)
    far = gm.forget_quality(np.linspace(0.01, 0.1, 30), np.linspace(0.9, 1.0, 30))
    assert far["forget_quality"] < 1e-6 and far["ks_statistic"] == pytest.approx(1.0)
    # the KS test does not care which way round the ratio is taken
    a, b = [0.3, 0.6, 1.2, 0.8], [0.5, 0.9, 1.1, 1.7, 0.4]
    assert gm.forget_quality(a, b)["forget_quality"] == pytest.approx(
        gm.forget_quality([1 / x for x in a], [1 / x for x in b])["forget_quality"])
    assert gm.model_utility([0.5, 1.0, 0.25]) == pytest.approx(3 / (2 + 1 + 4))
    assert gm.model_utility([0.5, 0.0]) == 0.0


def test_auc_privleak_and_unique_tokens():
    assert gm.membership_auc([3, 4, 5], [0, 1, 2]) == 1.0
    assert gm.membership_auc([1, 2], [1, 2]) == 0.5
    assert gm.priv_leak(0.75, 0.5) == pytest.approx(0.5)
    assert gm.fact_recall("He was born in  Quebec city.", "Quebec City") == 1.0 and gm.fact_recall("Lisbon", "Porto") == 0.0
    assert gm.unique_token_ratio([1, 2, 2, 3]) == 0.75 and gm.unique_token_ratio([]) == 0.0


def test_min_k_plus_plus_from_logits_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0], [1.0, 3.0, 0.5]])
    targets = torch.tensor([0, 2, 0])
    per = []
    for row, t in zip(logits.tolist(), targets.tolist()):
        z = [math.exp(v) for v in row]
        p = [v / sum(z) for v in z]
        lp = [math.log(v) for v in p]
        mu = sum(pi * li for pi, li in zip(p, lp))
        var = sum(pi * li * li for pi, li in zip(p, lp)) - mu * mu
        per.append((lp[t] - mu) / math.sqrt(max(var, 1e-12)))
    assert gm.min_k_plus_plus_tokens(logits, targets) == pytest.approx(per, abs=1e-6)
    lowest = sorted(per)
    assert gm.min_k_plus_plus(logits, targets, k=0.67) == pytest.approx(np.mean(lowest[:2]))
    assert gm.min_k_plus_plus(logits, targets, k=0.1) == pytest.approx(lowest[0])  # at least one token


# ---- tiny real models -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Llama over the generative stand-ins' words, initialised with a large spread so that its
    greedy outputs vary from token to token (the default init repeats one token)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from spul.data.generated_text import corpus
    from spul.data.tasks import QA_TEMPLATE
    from spul.testing import build_tokenizer

    tok = build_tokenizer(corpus() + [QA_TEMPLATE])
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, initializer_range=0.5,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    return model, tok


def _greedy_by_hand(model, ids, n, prompt=None):
    from spul.models.forward import hidden_states, lm_logits, pad_left

    ids, out = list(ids), []
    for _ in range(n):
        x, m = pad_left([ids], 0)
        nxt = int(lm_logits(model, hidden_states(model, x, m, prompt)[:, -1]).argmax(-1))
        if nxt == model.config.eos_token_id:
            break
        out.append(nxt)
        ids.append(nxt)
    return out


def test_generation_respects_the_token_limit_and_batching(tiny):
    model, tok = tiny
    prompts = [tok(t).input_ids for t in ("Where was Ada born ?", "In the winter when", "Which award did")]
    kw = {"pad_id": tok.pad_token_id, "eos_id": tok.eos_token_id}
    batched = generate_ids(model, prompts, decoding=DecodingConfig(max_new_tokens=5, batch_size=3), **kw)
    single = [generate_ids(model, [p], decoding=DecodingConfig(max_new_tokens=5), **kw)[0] for p in prompts]
    assert batched == single
    assert all(len(r) <= 5 for r in batched) and any(len(set(r)) > 1 for r in batched)
    assert batched == [_greedy_by_hand(model, p, 5) for p in prompts]
    # a soft prompt in front of every row, as inputs_embeds
    soft = torch.randn(1, 3, model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    with_prompt = generate_ids(model, prompts, decoding=DecodingConfig(max_new_tokens=4), soft_prompt=soft, **kw)
    assert with_prompt == [_greedy_by_hand(model, p, 4, soft) for p in prompts]
    assert with_prompt != [r[:4] for r in batched]
    # sampling: repeatable for a seed, different across seeds
    sample = DecodingConfig(max_new_tokens=6, do_sample=True, seed=3)
    first = generate_ids(model, prompts, decoding=sample, **kw)
    assert first == generate_ids(model, prompts, decoding=sample, **kw)
    others = [generate_ids(model, prompts, decoding=DecodingConfig(max_new_tokens=6, do_sample=True, seed=s), **kw) for s in (4, 5)]
    assert any(o != first for o in others)
    with pytest.raises(Exception, match="max_new_tokens"):
        DecodingConfig(max_new_tokens=0)


def test_answer_nlls_match_a_plain_forward(tiny):
    from spul.data.generation import GenerationEncoder
    from spul.data.tasks import GenerationTask

    model, tok = tiny
    enc = GenerationEncoder(GenerationTask(), tok, 64, 16)
    questions = ["Where was Ada born?", "Which award did Ada win?"]
    answers = ["Ada was born in Lisbon.", "Ada won the Silver Quill Prize."]
    batched = gm.answer_nlls(model, enc, questions, answers, batch_size=2)
    for ex, got in zip(enc.encode(questions, answers), batched):
        full = torch.tensor([ex.prompt_ids + ex.target_ids])
        with torch.no_grad():
            logits = model(full).logits[0]
        n = len(ex.target_ids)
        expected = torch.nn.functional.cross_entropy(logits[-n - 1 : -1], torch.tensor(ex.target_ids), reduction="none")
        assert got == pytest.approx(expected.numpy(), abs=1e-4)


def test_min_k_plus_plus_scores_on_a_tiny_model_match_its_logits(tiny):
    model, tok = tiny
    texts = ["In the winter when snow buried the lanes , Ada found a glass bird .", "Nobody in Saltmere had seen it ."]
    got = gm.min_k_plus_plus_scores(model, tok, texts, k=0.3, batch_size=2)
    for text, score in zip(texts, got):
        ids = tok(text).input_ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1].double()
        logp = torch.log_softmax(logits, -1)
        mu = (logp.exp() * logp).sum(-1)
        sigma = ((logp.exp() * logp**2).sum(-1) - mu**2).sqrt()
        per = ((logp.gather(1, torch.tensor(ids[1:]).view(-1, 1)).squeeze(1) - mu) / sigma).numpy()
        n = max(1, int(len(per) * 0.3))
        assert score == pytest.approx(np.sort(per)[:n].mean(), abs=1e-4)


def test_qa_evaluation_is_cached_and_summarised(tiny, tmp_path, monkeypatch):
    from spul.data.generation import GenerationEncoder
    from spul.data.generative_sources import GenerationDataConfig, load_generation_data
    from spul.data.tasks import GenerationTask

    model, tok = tiny
    data = load_generation_data(GenerationDataConfig(limits={"forget": 4, "retain": 4, "world_facts": 3}))
    enc = GenerationEncoder(GenerationTask(), tok, 96, 24)
    cfg = gm.GenerationEvalConfig(batch_size=4, decoding=DecodingConfig(max_new_tokens=4))
    records = gm.evaluate_qa_set(model, enc, data, "forget", identity="tiny-a", cfg=cfg, cache_dir=tmp_path)
    assert len(records["generation"]) == 4 and all(0 <= r <= 1 for r in records["rouge_l_recall"])
    row = 2
    q = data["forget"]["question"].iloc[row]
    para = gm.answer_nlls(model, enc, [q], [data["forget"]["paraphrased_answer"].iloc[row]])[0].mean()
    pert = [gm.answer_nlls(model, enc, [q], [p])[0].mean() for p in data.perturbed("forget")[row]]
    assert records["truth_ratio"][row] == pytest.approx(gm.truth_ratio(para, pert), rel=1e-5)

    def boom(*a, **k):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(gm, "generate_ids", boom)
    assert gm.evaluate_qa_set(model, enc, data, "forget", identity="tiny-a", cfg=cfg, cache_dir=tmp_path) == records
    with pytest.raises(AssertionError, match="cache"):  # another model identity never reuses the entry
        gm.evaluate_qa_set(model, enc, data, "forget", identity="tiny-b", cfg=cfg, cache_dir=tmp_path)
    monkeypatch.undo()
    per_set = {name: gm.evaluate_qa_set(model, enc, data, name, identity="tiny-a", cfg=cfg, cache_dir=tmp_path)
               for name in ("forget", "retain", "world_facts")}
    summary = gm.tofu_summary(per_set, retain_only_forget=per_set["forget"])
    assert summary["forget_quality"] == pytest.approx(1.0)
    values = [v for name in ("retain", "world_facts") for k, v in summary["sets"][name].items() if k != "fact_recall"]
    assert len(values) == 6 and "fact_recall" in summary["sets"]["forget"]
    assert summary["model_utility"] == pytest.approx(gm.model_utility(values))
    rows = [{"method": "base", **summary}, {"method": "other", **summary, "forget_quality": 1e-4, "model_utility": 0.2}]
    json_path, md_path = gm.write_generation_report(rows, tmp_path / "report")
    assert "| base | 1 |" in md_path.read_text() and json_path.is_file()
    png = gm.plot_forget_quality_vs_utility(rows, tmp_path / "report" / "fq_vs_mu.png")
    assert png.stat().st_size > 1000


def test_passage_metrics_on_a_tiny_model(tiny, tmp_path):
    from spul.data.generative_sources import GenerationDataConfig, load_generation_data

    model, tok = tiny
    data = load_generation_data(GenerationDataConfig(source="generated:passages",
                                                     limits={"knowmem_forget": 3, "knowmem_retain": 3}))
    cfg = gm.GenerationEvalConfig(batch_size=6, decoding=DecodingConfig(max_new_tokens=6))
    records = gm.evaluate_passages(model, tok, data, identity="tiny", cfg=cfg, cache_dir=tmp_path)
    assert len(records["verbmem_forget"]["rouge_l_f1"]) == len(data["verbmem_forget"])
    assert all(len(r.split()) <= 6 for r in records["verbmem_forget"]["reference"])
    summary = gm.passages_summary(records, retain_only=records)
    assert summary["priv_leak"] == 0.0 and 0 <= summary["auc"] <= 1
    assert set(summary) >= {"verbmem_forget", "knowmem_forget", "knowmem_retain", "auc", "priv_leak"}


def test_output_perplexity_is_the_exponentiated_mean_nll(tiny):
    from spul.data.generation import GenerationEncoder
    from spul.data.tasks import GenerationTask

    model, tok = tiny
    enc = GenerationEncoder(GenerationTask(), tok, 64, 16)
    ppl = gm.output_perplexities(model, enc, ["Where was Ada born?", "Where?"], ["Ada was born in Lisbon.", ""])
    nll = gm.answer_nlls(model, enc, ["Where was Ada born?"], ["Ada was born in Lisbon."])[0]
    assert ppl[0] == pytest.approx(math.exp(nll.mean())) and math.isnan(ppl[1])


def test_generation_examples_train_through_the_answer_loss(tiny):
    """A few steps on the trainers' collator + answer-position loss learn a multi-token answer."""
    import copy

    from spul.data.generation import GenerationEncoder
    from spul.data.tasks import GenerationTask
    from spul.methods.losses import answer_positions, per_row_mean, token_nll
    from spul.methods.training import AnswerCollator, AnswerDataset
    from spul.models.forward import hidden_states, lm_logits

    model, tok = tiny
    model = copy.deepcopy(model).train()
    enc = GenerationEncoder(GenerationTask(), tok, 64, 16)
    questions, answers = ["Where was Perrin born?", "Which award did Perrin win?"], ["Perrin was born in Lisbon.", "Perrin won the Silver Quill Prize."]
    before = [n.mean() for n in gm.answer_nlls(model, enc, questions, answers)]
    ds = AnswerDataset(enc.encode(questions, answers))
    batch = AnswerCollator(enc.pad_id)([ds[0], ds[1]])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(15):
        h, targets, rows = answer_positions(hidden_states(model, batch["input_ids"], batch["attention_mask"]), batch["labels"])
        loss = per_row_mean(token_nll(lm_logits(model, h), targets), rows, 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = [n.mean() for n in gm.answer_nlls(model.eval(), enc, questions, answers)]
    assert all(a < b / 4 for a, b in zip(after, before))
    out = generate_ids(model, [enc.encode_prompt(q) for q in questions], pad_id=enc.pad_id, eos_id=tok.eos_token_id,
                       decoding=DecodingConfig(max_new_tokens=12))
    assert [enc.decode(o) for o in out] == ["Perrin was born in Lisbon .", "Perrin won the Silver Quill Prize ."]
