"""``spul serve`` (HTTP API over one frozen model and many artifacts) and ``spul export-vllm``.

    spul serve --model NAME_OR_PATH --artifact people=runs/a/artifact --keys keys.yaml --port 8000
    spul export-vllm runs/a/artifact exported/people
"""

from __future__ import annotations

import logging

from spul.errors import ConfigError

log = logging.getLogger(__name__)


def _artifact_pairs(values: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values or []:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise ConfigError(f"--artifact {value!r} is not NAME=FOLDER", "write e.g. --artifact people=runs/quickstart/artifact")
        if name in pairs:
            raise ConfigError(f"--artifact name {name!r} is given twice", "give every artifact its own name")
        pairs[name] = folder
    return pairs


def build_service(args):
    """Load the model, the keys and the artifacts (refused ones are logged and skipped)."""
    from spul.models.loading import ModelConfig, load_model
    from spul.serving.app import ServeConfig, Service
    from spul.serving.batching import BatchConfig
    from spul.serving.policies import KeyTable
    from spul.serving.registry import Registry

    keys = KeyTable.load(args.keys)
    artifacts = _artifact_pairs(args.artifact)
    config = ServeConfig(max_texts=args.max_texts, max_chars=args.max_chars, max_new_tokens=args.max_new_tokens,
                         artifact_root=args.artifact_root, header_timeout_s=args.header_timeout,
                         batch=BatchConfig(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue))
    model, tokenizer = load_model(ModelConfig(name_or_path=args.model, dtype=args.dtype, device=args.device, max_length=args.max_length))
    registry = Registry(model, tokenizer, args.model, prefix_cache=not args.no_prefix_cache, max_length=args.max_length)
    for error in registry.load_startup(artifacts):
        print(f"spul serve: artifact refused, serving the others: {error}")
    unbound = sorted({p for p in keys.keys.values() if p not in registry.names()})
    if unbound:
        print(f"spul serve: warning: keys bound to unloaded policies {unbound} get 503 until those artifacts are added")
    return Service(registry, keys, config)


def server_settings(config) -> dict:
    """uvicorn settings that bound what slow or idle connections can hold (see spul.serving.guard)."""
    from spul.serving.guard import header_timeout_protocol

    return {"http": header_timeout_protocol(config.header_timeout_s), "timeout_keep_alive": 5,
            "h11_max_incomplete_event_size": 16 * 1024}


def cmd_serve(args) -> int:
    import uvicorn

    from spul.serving.app import create_app

    service = build_service(args)
    print(f"spul serve: {args.model} with policies {service.registry.names()} on http://{args.host}:{args.port} (docs at /docs)")
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="info" if args.verbose else "warning",
                **server_settings(service.config))
    return 0


def cmd_export_vllm(args) -> int:
    from spul.artifacts import read_metadata
    from spul.methods.registry import load_intervention
    from spul.models.loading import ModelConfig, load_model
    from spul.serving.vllm_export import MIN_VLLM, export_vllm

    meta = read_metadata(args.artifact)
    name = args.model or meta.get("base_model", "")
    model, tokenizer = load_model(ModelConfig(name_or_path=name, dtype=args.dtype, device="cpu"))
    intervention = load_intervention(args.artifact, model, tokenizer=tokenizer, model_name=name)
    out = export_vllm(intervention, meta, args.out, tokenizer=tokenizer, model=model, base_model=name)
    vectors = intervention.vectors
    print(f"exported soft prompt {tuple(vectors.shape)} {vectors.dtype} → {out}: vllm serve with --enable-prompt-embeds "
          f"(vLLM >= {MIN_VLLM}, Completions API), then python {out}/client.py --url URL TEXT (see {out}/README.md)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="HTTP API: one frozen model, many unlearning artifacts, policies per API key",
                              description="Serve a frozen base model with unlearning artifacts; API keys decide which applies.")
    p.add_argument("--model", required=True, help="base model id or folder (the one the artifacts were trained on)")
    p.add_argument("--artifact", action="append", default=[], metavar="NAME=FOLDER", help="an artifact to load (repeatable)")
    p.add_argument("--keys", required=True, help="YAML file mapping API keys to policies (see docs/serving.md)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-length", type=int, default=256, help="tokens per rendered prompt (as model.max_length)")
    p.add_argument("--max-batch", type=int, default=32, help="rows per forward pass")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    p.add_argument("--max-queue", type=int, default=256, help="waiting requests before answering 503 busy")
    p.add_argument("--max-texts", type=int, default=64, help="texts per classify request")
    p.add_argument("--max-chars", type=int, default=4000, help="characters per text")
    p.add_argument("--max-new-tokens", type=int, default=64, help="cap on generation length")
    p.add_argument("--artifact-root", help="folder under which admins may load artifacts at runtime (POST /v1/artifacts); "
                   "default: none (only the --artifact ones given at startup)")
    p.add_argument("--header-timeout", type=float, default=10.0, help="seconds a client may take to send its request headers")
    p.add_argument("--no-prefix-cache", action="store_true", help="recompute the soft prompt's keys/values every batch")
    p.add_argument("-v", "--verbose", action="store_true", help="show library logs and full tracebacks")
    p.set_defaults(func=cmd_serve)

    e = subparsers.add_parser("export-vllm", help="write an artifact's soft prompt for vLLM prompt embeds",
                              description="Write the soft prompt as [p, d] safetensors, the task template and a client.py that sends "
                                           "template + prompt through vLLM's Completions API (--enable-prompt-embeds, vLLM >= 0.11).")
    e.add_argument("artifact", help="artifact folder written by spul unlearn")
    e.add_argument("out", help="output folder")
    e.add_argument("--model", help="base model (default: the artifact's base_model)")
    e.add_argument("--dtype", default="auto", help="dtype of the exported tensor = the model dtype (auto, float32, bfloat16)")
    e.add_argument("-v", "--verbose", action="store_true", help="show library logs and full tracebacks")
    e.set_defaults(func=cmd_export_vllm)
