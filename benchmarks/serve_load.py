"""Load test for ``spul serve``: N concurrent /v1/classify requests, latency p50/p95/p99 and throughput.

Against a running server:

    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --key KEY -n 200

Or start one (``spul serve`` in a subprocess, a temporary keys file binding the key to the first artifact):

    python benchmarks/serve_load.py --model /tmp/qs1/familiarized/model --artifact a=/tmp/qs1/artifact -n 200
    python benchmarks/serve_load.py ... --serve-arg=--no-prefix-cache     # the recomputing path, for comparison

Texts come from the generated reviews data set, one text per request (the worst case for batching).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from _serve import start_server
import numpy as np


def texts(n: int) -> list[str]:
    from spul.data.generated import GENERATORS

    frames = GENERATORS["reviews"](seed=0)
    pool = [t for df in frames.values() for t in df["text"].tolist()]
    return [pool[i % len(pool)] for i in range(n)]


async def burst(url: str, key: str, inputs: list[str], endpoint: str) -> list[tuple[int, float]]:
    limits = httpx.Limits(max_connections=len(inputs), max_keepalive_connections=len(inputs))
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        async def one(text: str) -> tuple[int, float]:
            started = time.perf_counter()
            r = await client.post(url + endpoint, json={"texts": [text]}, headers={"Authorization": f"Bearer {key}"})
            return r.status_code, time.perf_counter() - started

        return await asyncio.gather(*(one(t) for t in inputs))


def report(results: list[tuple[int, float]], wall: float) -> dict:
    codes: dict[str, int] = {}
    for code, _ in results:
        codes[str(code)] = codes.get(str(code), 0) + 1
    ok = np.array([t for c, t in results if c == 200]) * 1000
    out = {"requests": len(results), "status": codes, "wall_s": round(wall, 2), "req_per_s": round(len(results) / wall, 1)}
    if len(ok):
        out.update({f"p{q}_ms": round(float(np.percentile(ok, q)), 1) for q in (50, 95, 99)})
    return out


def spawn(args) -> tuple[subprocess.Popen, str, str]:
    key = "bench-key-0001"
    policy = args.artifact[0].split("=", 1)[0] if args.artifact else "base"
    keys = Path(tempfile.mkdtemp()) / "keys.yaml"
    keys.write_text(f"keys:\n  {key}: {policy}\n")
    proc, url = start_server(["--model", args.model, "--keys", str(keys), "--dtype", args.dtype, "--max-length", str(args.max_length),
                              *[f"--artifact={a}" for a in args.artifact], *args.serve_arg])
    return proc, url, key


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url")
    p.add_argument("--key")
    p.add_argument("--model", help="start `spul serve` with this model instead of using --url")
    p.add_argument("--artifact", action="append", default=[], metavar="NAME=FOLDER")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--serve-arg", action="append", default=[], help="extra argument for spul serve (repeatable)")
    p.add_argument("-n", "--requests", type=int, default=200)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--endpoint", default="/v1/classify")
    args = p.parse_args()
    proc = None
    if args.model:
        proc, url, key = spawn(args)
    elif args.url and args.key:
        url, key = args.url.rstrip("/"), args.key
    else:
        p.error("give --url and --key, or --model to start a server")
    try:
        asyncio.run(burst(url, key, texts(args.warmup), args.endpoint))
        inputs = texts(args.requests)
        started = time.perf_counter()
        results = asyncio.run(burst(url, key, inputs, args.endpoint))
        out = report(results, time.perf_counter() - started)
        out["server"] = httpx.get(url + "/health").json()
        out["serve_args"] = args.serve_arg
        print(json.dumps(out, indent=2))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
