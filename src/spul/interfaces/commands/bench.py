"""``spul bench``: training examples/s and MFU, serving latency with and without the soft prompt.

    spul bench --model random:llama-7b --dtype bfloat16            # on a GPU, no weights needed
    spul bench --model packaged:smollm2-135m-instruct --steps 3 --out benchmarks/results/cpu.json
"""

from __future__ import annotations

import json


def cmd_bench(args) -> int:
    from spul.bench import BenchConfig, run_bench
    from spul.io import write_json

    if args.phase:
        return _phase(args)

    cfg = BenchConfig(
        model=args.model, dtype=args.dtype, device=args.device, attn_implementation=args.attn, data=args.data,
        max_length=args.max_length, seq_len=args.seq_len, min_seq_len=args.min_seq_len, batch_size=args.batch_size, prompt_length=args.prompt_length,
        steps=args.steps, warmup=args.warmup, train_variants=[v for v in args.train.split(",") if v],
        infer_variants=[v for v in args.infer.split(",") if v], infer_batch_size=args.infer_batch_size,
        infer_reps=args.infer_reps, peak_tflops=args.peak_tflops, cpu_time={"auto": None, "cpu": True, "wall": False}[args.clock],
    )
    result = run_bench(cfg)
    text = json.dumps(result, indent=2)
    if args.out:
        write_json(args.out, result)
        print(f"results: {args.out}")
    else:
        print(text)
    for t in result["targets"]:
        status = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT met")
        print(f"target: {t['target']}: {status} (measured {t['measured']})")
    return 0


def _phase(args) -> int:
    from spul.bench.phase import PhaseBenchConfig, run_phase_bench
    from spul.configuration import load_config
    from spul.interfaces.options import resolve_config_path
    from spul.io import write_json
    from spul.pipeline import RunConfig

    run_cfg = load_config(RunConfig, resolve_config_path(args.phase), args.set or [])
    cfg = PhaseBenchConfig(variants=[v for v in args.phase_variants.split(",") if v], base=args.phase_base,
                           epochs=args.phase_epochs, cpu_time={"auto": None, "cpu": True, "wall": False}[args.clock])
    result = run_phase_bench(run_cfg, cfg)
    if args.out:
        write_json(args.out, result)
        print(f"results: {args.out}")
    else:
        print(json.dumps(result, indent=2))
    if "target" in result:
        t = result["target"]
        print(f"target: {t['target']}: {'met' if t['met'] else 'NOT met'} (measured {t['measured']}x)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmark soft-prompt training and serving speed",
                              description="Training examples/s, MFU and peak memory of the SPUL step (optimised vs naive), "
                                          "and serving latency with and without the soft prompt, in one process; JSON out.")
    p.add_argument("--model", default="random:tiny", help="hub id, folder, packaged:NAME, or random:{tiny,smollm2-135m,llama-1b,llama-7b,llama-8b}")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--device", default="auto")
    p.add_argument("--attn", default=None, help="attention implementation, e.g. sdpa or flash_attention_2")
    p.add_argument("--data", default="generated:reviews", help="data source for real batches, or 'synthetic' (random ids of --seq-len)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=256, help="synthetic batches: longest sequence")
    p.add_argument("--min-seq-len", type=int, default=None, help="synthetic batches: shortest sequence (default --seq-len/2; = --seq-len for fixed length)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--prompt-length", type=int, default=30)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--train", default="optimised,naive", help="comma list of optimised, optimised_ckpt, naive (empty: skip)")
    p.add_argument("--infer", default="base,prompt,prefix_cache", help="comma list of base, prompt, prefix_cache (empty: skip)")
    p.add_argument("--infer-batch-size", type=int, default=32)
    p.add_argument("--infer-reps", type=int, default=5)
    p.add_argument("--peak-tflops", type=float, default=None, help="override the device peak used for MFU")
    p.add_argument("--clock", default="auto", choices=["auto", "cpu", "wall"],
                   help="cpu: this process's CPU time on one thread (robust on a shared CPU); auto: cpu on CPU devices, wall on GPUs")
    p.add_argument("--phase", metavar="CONFIG", help="instead: time the whole SPUL phase of a run config (e.g. quickstart), "
                                                     "the real trainer against the naive loop")
    p.add_argument("--phase-variants", default="optimised,naive", help="comma list of optimised, optimised_plain, naive")
    p.add_argument("--phase-epochs", type=float, default=None, help="override unlearn.num_epochs for the phase benchmark")
    p.add_argument("--phase-base", default=None, help="model to unlearn from (default: the config's model.name_or_path)")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="config overrides for --phase, e.g. model.dtype=float32")
    p.add_argument("--out", "-o", help="write the JSON here instead of printing it")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_bench)
