"""Abuse load test for ``spul serve``: latency of legitimate requests with and without hostile traffic.

Starts ``spul serve`` in a subprocess (the tiny random Llama by default, or ``--model``), then twice sends
``-n`` legitimate ``/v1/classify`` requests (``--concurrency`` at a time) over loopback: once alone, once while
another process keeps sending, in a loop over ``--abusers`` connections:

* 1 MB ``{"texts": [1, 1, ...]}`` bodies without a key (answered 401 before the body is read),
* 10 MB chunked bodies with a valid key (counted as they arrive, 413 after 1 MB),
* ~0.9 MB ``{"texts": [1, 1, ...]}`` with a valid key (422 at the first oversized field, bounded body),
* malformed JSON with a valid key (422),
* connections that never finish their headers (closed by the header timeout).

It prints p50/p95/p99 of the legitimate requests in both phases, what the abusers got, and the server's
resident memory before and after, as JSON.

    python benchmarks/serve_abuse.py                       # tiny model, 200 requests
    python benchmarks/serve_abuse.py --model PATH -n 200   # a real model
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from _serve import start_server
import numpy as np

KEY = "bench-abuse-key-0001"
TEXTS = ["the acting was great", "a dull and boring movie", "I loved every minute", "the plot made no sense"]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def spawn(model: str, max_length: int, header_timeout: float) -> tuple[subprocess.Popen, str]:
    keys = Path(tempfile.mkdtemp()) / "keys.yaml"
    keys.write_text(f"keys:\n  {KEY}: base\n")
    return start_server(["--model", model, "--keys", str(keys), "--dtype", "float32", "--device", "cpu", "--max-length", str(max_length),
                         "--header-timeout", str(header_timeout)], quiet=True)


async def legitimate(url: str, n: int, concurrency: int) -> list[tuple[int, float]]:
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=120) as client:
        async def one(i: int) -> tuple[int, float]:
            async with gate:
                started = time.perf_counter()
                r = await client.post(url + "/v1/classify", json={"texts": [TEXTS[i % len(TEXTS)]]}, headers={"Authorization": f"Bearer {KEY}"})
                return r.status_code, time.perf_counter() - started

        return await asyncio.gather(*(one(i) for i in range(n)))


def summary(results: list[tuple[int, float]], wall: float) -> dict:
    ok = np.array([t for c, t in results if c == 200]) * 1000
    codes: dict[str, int] = {}
    for c, _ in results:
        codes[str(c)] = codes.get(str(c), 0) + 1
    out = {"requests": len(results), "status": codes, "wall_s": round(wall, 2)}
    if len(ok):
        out.update({f"p{q}_ms": round(float(np.percentile(ok, q)), 1) for q in (50, 95, 99)})
        out["max_ms"] = round(float(ok.max()), 1)
    return out


# ---- the abusive client (its own process, so its work does not slow the legitimate client) ------------------

def _read_status(sock: socket.socket) -> int:
    sock.settimeout(10)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return 0
        data += chunk
    return int(data.split()[1])


def _send_and_status(port: int, head: bytes, body_chunks) -> int:
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        sock.sendall(head)
        sock.setblocking(False)
        status = 0
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError, OSError):
                break
            try:
                peek = sock.recv(4096, socket.MSG_PEEK)
                if peek:
                    break
            except BlockingIOError:
                pass
        sock.setblocking(True)
        try:
            status = _read_status(sock)
        except OSError:
            status = 0
        return status
    finally:
        sock.close()


def abuser(port: int, stop, counts) -> None:
    one_mb = json.dumps({"texts": [1] * 333_000}).encode()
    near_mb = json.dumps({"texts": [1] * 300_000}).encode()
    piece = b"1," * 32768
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    auth = f"Authorization: Bearer {KEY}\r\n"
    kinds = {
        "unauth_1mb": (f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(one_mb)}\r\n\r\n".encode(),
                       lambda: (one_mb[i:i + 65536] for i in range(0, len(one_mb), 65536))),
        "auth_chunked_10mb": (f"POST /v1/classify HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode(),
                              lambda: (chunk for _ in range(10_000_000 // len(piece)))),
        "auth_numbers_0.9mb": (f"POST /v1/classify HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {len(near_mb)}\r\n\r\n".encode(),
                               lambda: iter([near_mb])),
        "auth_malformed": (f"POST /v1/classify HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 20\r\n\r\n".encode(),
                           lambda: iter([b"{not json at all!!!}"])),
    }
    slow: list[socket.socket] = []
    i = 0
    while not stop.is_set():
        name = list(kinds)[i % len(kinds)]
        head, body = kinds[name]
        try:
            status = _send_and_status(port, head, body())
        except OSError:
            status = -1
        counts[f"{name}:{status}"] = counts.get(f"{name}:{status}", 0) + 1
        if i % 4 == 0 and len(slow) < 50:  # connections that never finish their headers
            try:
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n")
                slow.append(s)
            except OSError:
                pass
        i += 1
    dropped = 0
    for s in slow:
        s.setblocking(False)
        try:
            dropped += s.recv(10) == b""
        except BlockingIOError:
            pass
        except OSError:
            dropped += 1
        s.close()
    counts["slow_header_connections"] = len(slow)
    counts["slow_header_connections_closed_by_server"] = dropped


def cpu_name() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "unknown")
    isa = "AVX512-BF16" if "avx512_bf16" in info else ("AVX2" if "avx2" in info else "no AVX2")
    return f"{name}, {os.cpu_count()} cores visible, {isa}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model folder (default: a tiny random Llama built in a temporary folder)")
    p.add_argument("-n", "--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--abusers", type=int, default=2, help="abusive client processes")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--header-timeout", type=float, default=2.0)
    args = p.parse_args()
    model = args.model
    if model is None:
        from spul.testing import build_tiny_llama

        model = str(build_tiny_llama(Path(tempfile.mkdtemp()) / "tiny"))
    proc, url = spawn(model, args.max_length, args.header_timeout)
    port = int(url.rsplit(":", 1)[1])
    out: dict = {"cpu": cpu_name(), "model": args.model or "tiny random Llama (2 layers, hidden 64)", "requests": args.requests,
                 "concurrency": args.concurrency, "abusers": args.abusers}
    try:
        asyncio.run(legitimate(url, 16, args.concurrency))  # warm-up
        out["rss_mb_start"] = rss_mb(proc.pid)
        started = time.perf_counter()
        out["alone"] = summary(asyncio.run(legitimate(url, args.requests, args.concurrency)), time.perf_counter() - started)
        with mp.Manager() as manager:
            stop, counts = manager.Event(), manager.dict()
            workers = [mp.Process(target=abuser, args=(port, stop, counts)) for _ in range(args.abusers)]
            for w in workers:
                w.start()
            time.sleep(1.0)  # let the abuse get going
            started = time.perf_counter()
            out["under_abuse"] = summary(asyncio.run(legitimate(url, args.requests, args.concurrency)), time.perf_counter() - started)
            out["rss_mb_under_abuse"] = rss_mb(proc.pid)
            time.sleep(args.header_timeout + 0.5)  # let the header timeout fire on the slow connections
            stop.set()
            for w in workers:
                w.join(60)
            out["abuse_requests"] = dict(sorted(counts.items()))
        out["rss_mb_end"] = rss_mb(proc.pid)
        print(json.dumps(out, indent=2))
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
