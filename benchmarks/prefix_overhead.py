"""Serving overhead of the soft prompt, measured with interleaved A/B/C repetitions (drift cancels out).

Each repetition times base, uncached prompt and prefix-cached prompt back to back on the same batch, in this
process's CPU time on one thread (robust on a shared machine). Usage:
    SPUL_CACHE=/tmp/spulcache python benchmarks/prefix_overhead.py --reps 7 --out benchmarks/results/x.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time

import torch


def _quartiles(values: list[float]) -> dict[str, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return {"q1": round(q1, 4), "median": round(q2, 4), "q3": round(q3, 4)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--prompt-length", type=int, default=10)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from spul.bench.runner import BenchConfig, _real_batches
    from spul.models.forward import hidden_states, lm_logits
    from spul.models.loading import ModelConfig, load_model
    from spul.models.prefix_cache import PrefixCache
    from spul.models.forward import pad_left

    model, tok = load_model(ModelConfig(name_or_path=args.model, dtype="float32", device="cpu"))
    cfg = BenchConfig(model=args.model, infer_batch_size=args.batch_size, prompt_length=args.prompt_length)
    _, prompts = _real_batches(cfg, tok, 1, 1)
    ids, mask = pad_left(prompts, tok.pad_token_id)
    weight = model.get_input_embeddings().weight
    soft = weight[100:100 + args.prompt_length].detach().clone()
    cache = PrefixCache(model, soft)
    expanded = soft.unsqueeze(0).expand(ids.shape[0], -1, -1)

    def base():
        with torch.no_grad():
            return lm_logits(model, hidden_states(model, ids, mask)[:, -1, :].contiguous())

    def prompt():
        with torch.no_grad():
            return lm_logits(model, hidden_states(model, ids, mask, expanded)[:, -1, :].contiguous())

    def cached():
        return cache.last_logits(ids, mask)

    variants = {"base": base, "prompt": prompt, "prefix_cache": cached}
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.reps):
        for name, fn in variants.items():
            start = time.process_time()
            fn()
            times[name].append(time.process_time() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": "cpu, 1 thread, process CPU time", "model": args.model, "batch_size": ids.shape[0],
        "tokens_per_request": round(float(mask.sum()) / ids.shape[0], 1), "prompt_length": args.prompt_length,
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "overhead_vs_base": {k: round(v / med["base"] - 1, 4) for k, v in med.items()},
        # each repetition's variant against the base timed right before it: drift cancels, the spread shows the noise
        "paired_overhead": {k: _quartiles([x / b - 1 for x, b in zip(v, times["base"])]) for k, v in times.items() if k != "base"},
        "all_s": {k: [round(x, 4) for x in v] for k, v in times.items()},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from spul.io import write_json

        write_json(args.out, result)


if __name__ == "__main__":
    main()
