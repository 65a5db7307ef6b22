"""Distributed evaluation: 2 gloo processes on CPU write the report and predictions one process writes.

Each process scores every other batch of each split's length-sorted batches, so a batch holds the same rows as
in one process and the gathered scores are bitwise the one-process scores; rank 0 alone writes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, tiny_run_config

TORCHRUN = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
needs_torchrun = pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun is not installed")


def _torchrun(args: list[str], cwd, port: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]))
    proc = subprocess.run([TORCHRUN, "--nproc_per_node", "2", "--master_port", str(port), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@needs_torchrun
def test_two_process_evaluate_writes_the_one_process_report(tmp_path, tiny_model_dir, artifacts):
    from spul.configuration import dump_yaml
    from spul.pipeline import evaluate

    # batch 3: splits of 8, 16, 32 rows cut into odd numbers of batches, the last one short
    sections = dict(finetune={"enabled": False}, evaluation={"batch_size": 3, "progress": False})
    one = tiny_run_config(tmp_path / "one", tiny_model_dir, **sections)
    expected = evaluate(one, artifact=artifacts["a"])
    two = tiny_run_config(tmp_path / "two", tiny_model_dir, **sections)
    (tmp_path / "two.yaml").write_text(dump_yaml(two))
    proc = _torchrun(["-m", "spul.interfaces.cli", "evaluate", "--config", str(tmp_path / "two.yaml"), "--artifact", str(artifacts["a"])],
                     tmp_path, 29531)

    assert proc.stdout.count("report: ") == 1, "one process prints the summary"
    report = json.loads((two.out / "report" / "results.json").read_text())["results"]
    assert report == json.loads((one.out / "report" / "results.json").read_text())["results"]
    assert [r["name"] for r in report] == [r.name for r in expected] == ["Base", expected[1].name]
    files = sorted(p.name for p in (one.out / "report" / "predictions").iterdir())
    assert len(files) == 8 and files == sorted(p.name for p in (two.out / "report" / "predictions").iterdir())
    for name in files:  # every row, in the original order, with the same log-likelihoods to the last printed digit
        assert (two.out / "report" / "predictions" / name).read_text() == (one.out / "report" / "predictions" / name).read_text(), name
    # the cached scores are the one-process scores bit for bit
    for path in (one.out / "cache" / "eval").iterdir():
        theirs = json.loads((two.out / "cache" / "eval" / path.name).read_text())["loglik"]
        assert np.array_equal(np.asarray(theirs), np.asarray(json.loads(path.read_text())["loglik"])), path.name


def evaluate_interventions(out: str, model_dir: str) -> dict:
    """A deep prompt and a Gaussian-noise corruption evaluated on 4 small splits (batch 2), cache under ``out``;
    run in one process by the test and in each of 2 processes by torchrun (``SCRIPT``)."""
    import torch

    from spul.configuration import from_dict
    from spul.data.encoding import TaskEncoder
    from spul.data.sources import load_unlearning_data
    from spul.data.tasks import Task
    from spul.evaluation.config import EvalConfig
    from spul.evaluation.evaluate import evaluate_model
    from spul.interventions import CorruptionConfig, DeepPrompt, EmbeddingCorruption, EmbeddingGuard
    from spul.interventions.corruption import Corruption
    from spul.models.loading import ModelConfig, load_model
    from spul.run_config import RunConfig

    cfg = from_dict(RunConfig, {"model": {"name_or_path": model_dir}, "data": {"source": "generated:reviews",
                    "limits": {"train_forget": 10, "train_retain": 12, "test_forget": 7, "test_retain": 9}}})
    data = load_unlearning_data(cfg.data, Task(cfg.task))
    model, tok = load_model(ModelConfig(name_or_path=model_dir, dtype="float32", device="cpu"))
    enc = TaskEncoder(Task(cfg.task), tok, 64)
    g = torch.Generator().manual_seed(3)
    c = model.config
    shape = (1, c.num_key_value_heads, 3, c.hidden_size // c.num_attention_heads)
    layers = [(torch.randn(shape, generator=g), torch.randn(shape, generator=g)) for _ in range(c.num_hidden_layers)]
    noise = Corruption(CorruptionConfig(name="noise", dims=0, select="first", sigma=2.0, seed=0))
    found, rows = {}, {}
    for iv in (DeepPrompt("deep", layers), EmbeddingCorruption("noise", EmbeddingGuard(noise, pad_token_id=tok.pad_token_id))):
        seen = []  # rows this process ran through the model (each forward's batch size)
        handle = model.get_input_embeddings().register_forward_hook(lambda m, a, o, seen=seen: seen.append(o.shape[0]))
        try:
            found[iv.name] = evaluate_model(model, enc, data, EvalConfig(batch_size=2, progress=False), name=iv.name, identity=iv.name,
                                            intervention=iv, cache_dir=f"{out}/cache").as_dict()
        finally:
            handle.remove()
        rows[iv.name] = sum(seen)
    return found, rows


SCRIPT = """
import json, sys
import torch.distributed as dist
from spul.methods.distributed import init_distributed
from test_distributed_eval import evaluate_interventions

assert init_distributed()
found, rows = evaluate_interventions(sys.argv[1], sys.argv[2])
with open(f"{sys.argv[1]}/result{dist.get_rank()}.json", "w") as f:
    json.dump({"results": found, "rows": rows}, f)
"""


@needs_torchrun
def test_distributed_evaluation_of_a_deep_prompt_and_a_noise_stream(tmp_path, tiny_model_dir):
    """A batch-invariant intervention (a deep prompt) is split across processes; a noise stream (ECO's Gaussian
    corruption) is scored whole by rank 0 so its noise is the one-process noise. Both equal one process."""
    script = tmp_path / "evaluate.py"
    script.write_text(SCRIPT)
    (tmp_path / "two").mkdir()
    _torchrun([str(script), str(tmp_path / "two"), str(tiny_model_dir)], tmp_path, 29532)
    found, rows = evaluate_interventions(str(tmp_path / "one"), str(tiny_model_dir))
    one = json.loads(json.dumps(found))
    ranks = [json.loads((tmp_path / "two" / f"result{rank}.json").read_text()) for rank in (0, 1)]
    for rank in (0, 1):  # every process returns the gathered result
        assert ranks[rank]["results"] == one, f"rank {rank}"
    # the deep prompt's batches were shared out (each rank ran some, together all of them); the noise stream ran on rank 0
    deep = [r["rows"]["deep"] for r in ranks]
    assert min(deep) > 0 and sum(deep) == rows["deep"]
    assert [r["rows"]["noise"] for r in ranks] == [rows["noise"], 0]
    cached = sorted(p.name for p in (tmp_path / "one" / "cache").iterdir())
    assert len(cached) == 8 and sorted(p.name for p in (tmp_path / "two" / "cache").iterdir()) == cached
    for name in cached:
        assert (tmp_path / "two" / "cache" / name).read_text() == (tmp_path / "one" / "cache" / name).read_text()


def test_noise_corruptions_are_not_batch_invariant():
    from spul.interventions import CorruptionConfig, EmbeddingCorruption, EmbeddingGuard, Gated
    from spul.interventions.corruption import Corruption

    def corruption(name):
        return EmbeddingCorruption(name, EmbeddingGuard(Corruption(CorruptionConfig(name=name))))

    assert not corruption("noise").batch_invariant
    assert corruption("zero").batch_invariant and corruption("sign_flip").batch_invariant
    assert not Gated("eco", corruption("noise"), classifier=None).batch_invariant


def test_shards_of_the_length_batches_cover_every_row_once():
    from spul.models.scoring import length_batches

    prompts = [[0] * n for n in (5, 1, 3, 3, 9, 2, 7)]
    batches = length_batches(prompts, 2)
    assert [len(prompts[i]) for b in batches for i in b] == sorted(len(p) for p in prompts)
    shards = [np.concatenate(batches[r::3]) for r in range(3)]
    assert sorted(np.concatenate(shards).tolist()) == list(range(len(prompts)))
