"""What the serving benchmarks share: a free loopback port and a ``spul serve`` process started and waited for."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(serve_args: list[str], quiet: bool = False, wait_s: float = 300) -> tuple[subprocess.Popen, str]:
    """``spul serve SERVE_ARGS --port P`` on a free loopback port; returns once ``/health`` answers 200."""
    port = free_port()
    cmd = [sys.executable, "-m", "spul.interfaces.cli", "serve", *serve_args, "--port", str(port)]
    proc = subprocess.Popen(cmd, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}, stdout=subprocess.DEVNULL if quiet else None)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + wait_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.terminate()
    raise SystemExit(f"server did not start within {wait_s:.0f} s")
