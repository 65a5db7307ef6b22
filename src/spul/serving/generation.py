"""Generation jobs on the model thread: one ``model.generate`` call per (policy, sampling) group of rows.

A ``GENERATE`` job's items are ``GenItem``s. The batcher already groups jobs by policy; here rows that share
their sampling settings (greedy, temperature, top_p, stop strings) run together, and a seeded row always runs
alone so its seed alone decides its text. A row may carry a ``sink``: it receives each generated token id as
it is produced and ``None`` when its group is done (streaming); sinks are called on the model thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from spul.serving import inference
from spul.serving.inference import GREEDY, RowStreamer, Sampling


@dataclass
class GenItem:
    ids: list[int]  # the prompt's token ids (special tokens included)
    max_new_tokens: int
    text: str  # the prompt text, for policies that classify it (ECO)
    sampling: Sampling = GREEDY
    sink: Callable[[int | None], None] | None = None


def _item(raw) -> GenItem:
    """Older callers queue ``(ids, max_new_tokens, text)`` tuples."""
    return raw if isinstance(raw, GenItem) else GenItem(list(raw[0]), int(raw[1]), str(raw[2]))


def run_generation(model, tokenizer, policy, jobs) -> list[list[list[int]]]:
    """The generated ids of every row of every job (one list per job, rows in order)."""
    rows = [(j, r, _item(raw)) for j, job in enumerate(jobs) for r, raw in enumerate(job.items)]
    groups: dict[tuple, list[int]] = {}
    for index, (_, _, item) in enumerate(rows):
        key = ("seeded", index) if item.sampling.seed is not None else ("shared", item.sampling)
        groups.setdefault(key, []).append(index)
    out: list[list[list[int]]] = [[[] for _ in job.items] for job in jobs]
    for members in groups.values():
        items = [rows[i][2] for i in members]
        texts, prompts = [it.text for it in items], [it.ids for it in items]
        streamer = RowStreamer([it.sink for it in items]) if any(it.sink for it in items) else None
        try:
            with policy.guard(model, texts, prompts) as hook:
                result = inference.generate(model, tokenizer, prompts, [it.max_new_tokens for it in items], policy.vectors,
                                            policy.prefix, row_hook=hook, sampling=items[0].sampling, streamer=streamer)
        finally:
            if streamer is not None and not streamer.ended:
                streamer.end()
        for index, tokens in zip(members, result):
            j, r, _ = rows[index]
            out[j][r] = tokens
    return out
