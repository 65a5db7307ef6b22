"""``spul accelerate-config [NAME]``: the path of an accelerate config shipped inside the package (ddp, fsdp,
deepspeed_zero2, deepspeed_zero3), for ``accelerate launch --config_file "$(spul accelerate-config fsdp)" ...``."""

from __future__ import annotations

from pathlib import Path


def shipped_configs() -> dict[str, Path]:
    """Name -> path of every accelerate config in ``spul/configs/accelerate``."""
    import spul

    folder = Path(spul.__file__).parent / "configs" / "accelerate"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def accelerate_config_path(name: str) -> Path:
    from spul.errors import ConfigError

    configs = shipped_configs()
    key = name[:-5] if name.endswith(".yaml") else name
    if key not in configs:
        raise ConfigError(f"no shipped accelerate config named {name!r}", f"use one of: {', '.join(configs)}")
    return configs[key]


def cmd_accelerate_config(args) -> int:
    if not args.name:
        for name, path in shipped_configs().items():
            print(f"{name}\t{path}")
        return 0
    path = accelerate_config_path(args.name)
    print(path.read_text(encoding="utf-8") if args.show else path)
    return 0


def register(subparsers) -> None:
    help_text = "print the path of an accelerate config shipped with spul (no NAME: list them)"
    p = subparsers.add_parser("accelerate-config", help=help_text, description=help_text)
    p.add_argument("name", nargs="?", default=None, help="ddp, fsdp, deepspeed_zero2 or deepspeed_zero3")
    p.add_argument("--show", action="store_true", help="print the file's contents instead of its path")
    p.add_argument("-v", "--verbose", action="store_true", help="full tracebacks")
    p.set_defaults(func=cmd_accelerate_config)
