"""The server under hostile and careless clients (issue 15): authentication and body limits before parsing,
bounded error bodies, per-request isolation in the batcher, artifacts refused at load instead of failing
requests later, an artifact root, a header timeout, and /health that shows nothing without a key.

Real uvicorn on 127.0.0.1 over the tiny Llama, raw sockets where the attack needs them.
"""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import socket
import threading
import time

import httpx
import pytest
from test_serving import ADMIN, KEY_A, KEY_BASE, TEXTS, Running, _h, _service

BODY_1MB = json.dumps({"texts": [1] * 333_000}).encode()  # ~1 MB of numbers where strings belong


@pytest.fixture(scope="module")
def server(tiny_model_dir, artifacts):  # noqa: F811
    running = Running(_service(tiny_model_dir, artifacts))
    yield running
    running.stop()


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_and_body(sock: socket.socket, timeout: float = 5.0) -> tuple[int, bytes]:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split()[1]), body


def _raw_post(port: int, headers: dict[str, str], first_body: bytes, path: str = "/v1/classify") -> tuple[int, bytes, float, socket.socket]:
    """Send the request line, headers and the start of the body; time until the status line arrives."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    started = time.perf_counter()
    sock.sendall(head.encode() + first_body)
    status, body = _status_and_body(sock)
    return status, body, time.perf_counter() - started, sock


def _keep_sending(sock: socket.socket, total: int, chunked: bool) -> int:
    """Push the rest of a body until the server stops taking it; returns the bytes it accepted."""
    sent = 0
    piece = b"1," * 32768
    try:
        sock.settimeout(2)
        while sent < total:
            data = (f"{len(piece):x}\r\n".encode() + piece + b"\r\n") if chunked else piece
            sock.sendall(data)
            sent += len(piece)
    except (TimeoutError, BrokenPipeError, ConnectionResetError, OSError):
        pass
    return sent


def test_unauthenticated_1mb_body_is_refused_before_parsing(server):
    rss = _rss_mb()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(BODY_1MB))}
    status, body, seconds, sock = _raw_post(server.port, headers, BODY_1MB[:65536])
    _keep_sending(sock, len(BODY_1MB), chunked=False)
    sock.close()
    assert status == 401 and seconds < 0.1, (status, seconds)
    assert len(body) < 300 and b"1,1" not in body
    # a whole 1 MB body, as an ordinary client sends it: still a short 401 at once
    started = time.perf_counter()
    try:
        r = httpx.post(server.url + "/v1/classify", content=BODY_1MB, headers={"content-type": "application/json"})
        assert r.status_code == 401 and len(r.content) < 300
    except httpx.TransportError:
        pass  # the server closed the connection before the client finished writing: also fine
    assert time.perf_counter() - started < 1.0
    assert _rss_mb() - rss < 30


@pytest.mark.parametrize("authenticated", [False, True], ids=["no_key", "with_key"])
def test_10mb_chunked_body_is_cut_off_as_it_arrives(server, authenticated):
    rss = _rss_mb()
    headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    if authenticated:
        headers["Authorization"] = f"Bearer {KEY_A}"
    sock = socket.create_connection(("127.0.0.1", server.port))
    head = "POST /v1/classify HTTP/1.1\r\nHost: x\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    started = time.perf_counter()
    sock.sendall(head.encode())
    pusher = threading.Thread(target=_keep_sending, args=(sock, 10_000_000, True), daemon=True)
    pusher.start()
    status, body = _status_and_body(sock)
    seconds = time.perf_counter() - started
    pusher.join(10)
    sock.close()
    assert status == (413 if authenticated else 401), body
    assert seconds < (0.1 if not authenticated else 1.0), seconds  # with a key: ~1 MB must arrive first
    assert len(body) < 300
    assert _rss_mb() - rss < 30


def test_declared_oversized_body_with_key_is_413_before_reading(server):
    headers = {"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json", "Content-Length": str(200_000_000)}
    status, body, seconds, sock = _raw_post(server.port, headers, b"{")
    sock.close()
    assert status == 413 and seconds < 0.1 and b"limit" in body


def test_health_and_docs_take_no_body(server):
    status, _, seconds, sock = _raw_post(server.port, {"Transfer-Encoding": "chunked"}, b"", path="/health")
    sock.close()
    assert status == 413 and seconds < 0.1


def test_validation_errors_are_bounded_and_never_echo_input(server):
    url = server.url + "/v1/classify"
    started = time.perf_counter()
    r = httpx.post(url, content=BODY_1MB[:900_000].rsplit(b",", 1)[0] + b"]}", headers={**_h(KEY_A), "content-type": "application/json"})
    assert r.status_code == 422 and len(r.content) < 2000 and time.perf_counter() - started < 1.0, (r.status_code, len(r.content))
    secret = "s3cr3t-" + "x" * 5000
    r = httpx.post(url, json={"texts": secret}, headers=_h(KEY_A))
    assert r.status_code == 422 and "s3cr3t" not in r.text and len(r.content) < 2000
    r = httpx.post(url, content=b"{not json " + b"y" * 10000, headers={**_h(KEY_A), "content-type": "application/json"})
    assert r.status_code == 422 and b"yyyy" not in r.content


def test_legitimate_latency_while_another_client_floods(server):
    """Other clients' oversized and malformed bodies do not hold up a legitimate request."""
    stop = threading.Event()

    def flood():
        while not stop.is_set():
            try:
                httpx.post(server.url + "/v1/classify", content=BODY_1MB, headers={"content-type": "application/json"}, timeout=5)
            except httpx.TransportError:
                pass

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        times = []
        for i in range(10):
            t0 = time.perf_counter()
            r = httpx.post(server.url + "/v1/classify", json={"texts": [TEXTS[i % 4]]}, headers=_h(KEY_A), timeout=30)
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert max(times) < 2.0, times


def test_lone_surrogate_fails_only_its_own_request(server):
    async def burst():
        async with httpx.AsyncClient(timeout=60) as client:
            good = [client.post(server.url + "/v1/classify", json={"texts": [TEXTS[i % 4]]}, headers=_h(KEY_BASE)) for i in range(40)]
            raw = {**_h(KEY_A), "content-type": "application/json"}  # json.dumps escapes the surrogate as \\ud800
            bad = [client.post(server.url + "/v1/classify", content=json.dumps({"texts": ["fine", "\ud800"]}), headers=raw),
                   client.post(server.url + "/v1/generate", content=json.dumps({"prompt": "hi \ud800", "max_new_tokens": 4}), headers=raw)]
            return await asyncio.gather(*good, *bad)

    results = asyncio.run(burst())
    assert [r.status_code for r in results[:40]] == [200] * 40
    assert [r.status_code for r in results[40:]] == [422, 422]
    assert "surrogate" in results[40].json()["detail"]


def test_batcher_isolates_a_request_that_breaks_the_runner():
    """Depth: even an input only the model thread finds bad fails alone; its batch-mates get results."""
    from spul.serving.batching import BatchConfig, Batcher, Job, JobFailed, JobKind

    def runner(kind, policy, jobs):
        if any("\ud800" in item for job in jobs for item in job.items):
            "\ud800".encode("utf-8")  # what a tokenizer does with a lone surrogate: raises
        return [[len(item) for item in job.items] for job in jobs]

    async def main():
        batcher = Batcher(runner, BatchConfig(max_batch=32, max_wait_ms=50))
        await batcher.start()
        try:
            jobs = [Job(JobKind.CLASSIFY, "p", [t]) for t in ("aa", "bbb", "\ud800", "c")]
            return await asyncio.gather(*(batcher.submit(j) for j in jobs), return_exceptions=True), batcher.batches_run
        finally:
            await batcher.stop()

    results, _ = asyncio.run(main())
    assert results[0] == [2] and results[1] == [3] and results[3] == [1]
    assert isinstance(results[2], JobFailed) and results[2].status == 422 and "\ud800" not in results[2].detail


def test_generate_prompt_that_tokenises_to_nothing_is_422(server):
    r = httpx.post(server.url + "/v1/generate", json={"prompt": "   ", "max_new_tokens": 4}, headers=_h(KEY_A))
    assert r.status_code == 422 and "tokenises to nothing" in r.json()["detail"]


def test_health_without_key_shows_only_liveness(server, tiny_model_dir):
    r = httpx.get(server.url + "/health")
    assert r.json() == {"status": "ok"} and str(tiny_model_dir) not in r.text
    full = httpx.get(server.url + "/health", headers=_h(KEY_A)).json()
    assert full["status"] == "ok" and "policies" in full and "model" in full


def _copy_with(artifacts, name, change):  # noqa: F811
    folder = artifacts["root"] / name
    if not folder.exists():
        shutil.copytree(artifacts["a"], folder)
        meta = json.loads((folder / "spul.json").read_text())
        change(meta)
        (folder / "spul.json").write_text(json.dumps(meta))
    return folder


def test_bad_artifacts_are_refused_at_load_not_per_request(server, artifacts, tiny_model_dir):  # noqa: F811
    from spul.models.loading import ModelConfig, load_model
    from spul.serving.registry import Registry

    url = server.url + "/v1/artifacts"
    numeric = _copy_with(artifacts, "numeric_fp", lambda m: m.update(base_fingerprint=12345))
    r = httpx.post(url, json={"name": "n", "path": str(numeric)}, headers=_h(ADMIN))
    assert r.status_code == 400 and "base_fingerprint" in r.json()["detail"], r.text
    unknown_words = _copy_with(artifacts, "unknown_words", lambda m: m["task"].update(label_words=["zzbad", "zzgood"]))
    r = httpx.post(url, json={"name": "w", "path": str(unknown_words)}, headers=_h(ADMIN))
    assert r.status_code == 400 and "tokenizer" in r.json()["detail"], r.text
    assert "w" not in [a["name"] for a in httpx.get(url, headers=_h(ADMIN)).json()["artifacts"]]
    huge = _copy_with(artifacts, "huge_meta", lambda m: m.update(padding="x" * 5_000_000))
    r = httpx.post(url, json={"name": "h", "path": str(huge)}, headers=_h(ADMIN))
    assert r.status_code == 400 and "bytes" in r.json()["detail"]
    # at startup the same artifacts are skipped, not fatal
    model, tok = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu"))
    registry = Registry(model, tok, str(tiny_model_dir), max_length=64)
    errors = registry.load_startup({"n": str(numeric), "w": str(unknown_words), "a": str(artifacts["a"])})
    assert len(errors) == 2 and registry.names() == ["a", "base"]


def test_artifact_paths_are_confined_to_the_artifact_root(server, artifacts, tmp_path, tiny_model_dir):  # noqa: F811
    from spul.serving.app import ServeConfig, Service

    outside = tmp_path / "elsewhere"
    shutil.copytree(artifacts["a"], outside)
    url = server.url + "/v1/artifacts"
    for path in (str(outside), str(artifacts["root"] / ".." / outside.name), "/etc"):
        r = httpx.post(url, json={"name": "o", "path": path}, headers=_h(ADMIN))
        assert r.status_code == 403 and "artifact root" in r.json()["detail"], r.text
    # default: no root, so no runtime loading at all
    service = _service(tiny_model_dir, artifacts)
    closed = Running(Service(service.registry, service.keys, ServeConfig(max_texts=8, max_chars=500, max_new_tokens=8)))
    try:
        r = httpx.post(closed.url + "/v1/artifacts", json={"name": "o", "path": str(artifacts["a"])}, headers=_h(ADMIN))
        assert r.status_code == 403 and "--artifact-root" in r.json()["detail"]
    finally:
        closed.stop()


def test_slow_headers_are_dropped(server):
    """A client that trickles its headers is disconnected after the header timeout (spul serve's protocol)."""
    import uvicorn
    from test_serving import _free_port

    from spul.serving.app import create_app
    from spul.serving.guard import header_timeout_protocol

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(server.service), host="127.0.0.1", port=port, log_level="error",
                                        http=header_timeout_protocol(0.5), lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.02)
    try:
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        for s in slow:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finishes the headers
        time.sleep(1.2)
        for s in slow:
            s.settimeout(1)
            assert s.recv(100) == b""  # closed by the server
            s.close()
        # a normal client on the same server is served, and kept alive between requests
        with httpx.Client() as client:
            assert client.get(f"http://127.0.0.1:{port}/health").status_code == 200
            time.sleep(0.8)
            assert client.get(f"http://127.0.0.1:{port}/health").status_code == 200
    finally:
        srv.should_exit = True
        thread.join(10)


def test_eco_embedding_cache_is_bounded():
    import numpy as np

    from spul.methods.eco.classifier import CachedEmbedder

    calls = []

    def embed(texts):
        calls.append(len(texts))
        return np.ones((len(texts), 4))

    cache = CachedEmbedder(embed_fn=embed, max_entries=100)
    for i in range(10_000):
        cache([f"text {i}", "hot"])
    assert len(cache.cache) == 100 and "hot" in cache.cache
    assert cache(["hot", "hot"]).shape == (2, 4)
