"""lm-evaluation-harness with an artifact applied: utility benchmarks (MMLU, ARC, WMDP, ...) with the prompt on,
and the spul task itself exported as lm-eval tasks.

A SPUL artifact is a PEFT prompt-tuning adapter, so lm-eval's ``hf`` model applies it as it is:

    lm_eval --model hf --model_args pretrained=BASE,peft=ARTIFACT --tasks mmlu

(``spul lm-eval`` does the same through spul's own loader: the base fingerprint is checked and packaged or
local models work.) lm-eval pads on the right and PEFT puts the soft prompt in front of every row, so every
row sees the prompt at positions ``0..p-1`` followed by its tokens, exactly as in spul.

ECO cannot go this way: its unlearning is a prompt classifier plus an embedding hook that corrupts flagged
rows, not a PEFT adapter, and lm-eval's ``hf`` model has no place to run the classifier per row. Evaluate ECO
with ``spul eco`` / ``spul evaluate``.

``export_task`` writes the spul task (template, every candidate answer as a choice, the four splits recorded in
``OUTPUT/data``) as lm-eval task YAMLs over local JSONL files; lm-eval's ``acc`` on them is spul's accuracy (a
generic answer counts as wrong), row for row.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from spul.artifacts import load_soft_prompt, read_metadata
from spul.data.splits import SPLITS
from spul.data.tasks import Task, TaskConfig
from spul.errors import ArtifactError, ConfigError, DataError
from spul.io import write_text
from spul.models.loading import ModelConfig, load_model

log = logging.getLogger(__name__)


def _require_lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ConfigError("lm-eval is not installed", "pip install 'spul[lmeval]' (or pip install lm-eval)") from None


def _jinja_literal(text: str) -> str:
    """``text`` as literal Jinja template text."""
    if any(marker in text for marker in ("{{", "{%", "{#", "}}", "%}", "#}")):
        return "{% raw %}" + text + "{% endraw %}"
    return text


def task_name(name: str, split: str) -> str:
    return f"spul_{name}_{split}"


def export_task(task_config: TaskConfig, data_dir: str | Path, out: str | Path, name: str = "task") -> list[Path]:
    """Write one lm-eval task per split found in ``data_dir`` (``spul prepare``'s CSVs) into ``out``.

    Each task is ``multiple_choice`` over the rendered template (the answer slot left open), with every
    candidate (label words, then generic labels) as a choice and the row's label id as the target, so
    ``acc`` is spul's accuracy. All tasks carry the tag ``spul_<name>``. Returns the YAML paths.
    """
    import pandas as pd
    import yaml

    data_dir, out = Path(data_dir), Path(out)
    if not name.replace("_", "").isalnum():
        raise ConfigError(f"task name {name!r} is not allowed", "use letters, digits and '_'")
    task = Task(task_config)
    found = [s for s in SPLITS if (data_dir / f"{s.value}.csv").is_file()]
    if not found:
        raise DataError(f"{str(data_dir)!r} holds none of {', '.join(s.value + '.csv' for s in SPLITS)}",
                        "point --data at a run's OUTPUT/data folder (written by spul prepare/run)")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    doc_to_text = (_jinja_literal(task.prompt_before_text + task.text_lead) + "{{text}}" + _jinja_literal(task.prompt_after_text))
    for split in found:
        frame = pd.read_csv(data_dir / f"{split.value}.csv", keep_default_na=False)
        if not {"text", "label"} <= set(frame.columns):
            raise DataError(f"{split.value}.csv has columns {list(frame.columns)}; it needs 'text' and 'label'", "re-run spul prepare")
        rows = []
        for i, (text, label) in enumerate(zip(frame["text"], frame["label"])):
            label_id = task.label_id(label)
            if label_id is None:
                raise DataError(f"{split.value}.csv row {i}: label {label!r} is not one of {task.label_words}", "re-run spul prepare")
            rows.append(json.dumps({"text": str(text), "label": label_id}, ensure_ascii=False))
        jsonl = (out / f"{split.value}.jsonl").resolve()
        write_text(jsonl, "\n".join(rows) + "\n")
        config = {
            "task": task_name(name, split.value),
            "tag": [f"spul_{name}"],
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(jsonl)}},
            "test_split": "test",
            "output_type": "multiple_choice",
            "doc_to_text": doc_to_text,
            "doc_to_choice": list(task.candidates),
            "doc_to_target": "label",
            "target_delimiter": task.answer_separator,
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0, "spul_split": split.value, "template": task_config.template,
                         "label_words": list(task.label_words), "generic_labels": list(task.generic_labels)},
        }
        path = out / f"{task_name(name, split.value)}.yaml"
        write_text(path, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        written.append(path)
    return written


def harness_model(artifact: str | Path | None, base: str | None = None, dtype: str = "auto", device: str = "auto",
                  batch_size: int = 8, max_length: int | None = None):
    """An lm-eval ``HFLM`` over the base model with ``artifact`` (a SPUL soft prompt) applied, or the base alone."""
    _require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    meta = read_metadata(artifact) if artifact else {}
    if meta.get("method", "spul") != "spul":
        raise ArtifactError(f"artifact {str(artifact)!r} is a {meta.get('method')!r} artifact; lm-eval can only apply soft-prompt (PEFT) artifacts",
                            "ECO is a classifier + embedding hook that lm-eval's hf model cannot run; evaluate it with spul eco")
    name = base or meta.get("base_model")
    if not name:
        raise ConfigError("no base model: the artifact does not record one and --model is not given", "pass --model BASE")
    model, tokenizer = load_model(ModelConfig(name_or_path=name, dtype=dtype, device=device))
    if artifact:
        model, _ = load_soft_prompt(model, artifact, model_name=name)
    model.eval()
    # lm-eval pads on the right; the soft prompt stays in front of every row
    tokenizer.padding_side = "right"
    kwargs = {"max_length": max_length} if max_length else {}
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, **kwargs)


_MANAGERS: dict[tuple[str | None, bool], Any] = {}


def task_manager(tasks: list[str], include_path: str | Path | None = None):
    """lm-eval's task index: the local folder alone when it has every task (indexing lm-eval's ~15k bundled
    tasks takes ~30 s), else the local folder plus the bundled tasks. Cached per process."""
    from lm_eval.tasks import TaskManager

    include = str(Path(include_path).resolve()) if include_path else None
    if include is not None:
        if (include, False) not in _MANAGERS:
            _MANAGERS[(include, False)] = TaskManager(include_path=include, include_defaults=False)
        if all(t in _MANAGERS[(include, False)].all_tasks for t in tasks):
            return _MANAGERS[(include, False)]
    if (include, True) not in _MANAGERS:
        _MANAGERS[(include, True)] = TaskManager(include_path=include)
    return _MANAGERS[(include, True)]


def run_harness(artifact: str | Path | None, tasks: list[str], base: str | None = None, include_path: str | None = None,
                limit: float | None = None, num_fewshot: int | None = None, batch_size: int = 8,
                dtype: str = "auto", device: str = "auto", log_samples: bool = False) -> dict[str, Any]:
    """``lm_eval.simple_evaluate`` on ``tasks`` with the artifact applied (None: the base model)."""
    _require_lm_eval()
    from lm_eval import simple_evaluate

    if not tasks:
        raise ConfigError("no lm-eval tasks given", "pass e.g. --tasks arc_easy,mmlu (or a task exported with --export-task)")
    manager = task_manager(tasks, include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ConfigError(f"lm-eval does not know the task(s) {unknown}",
                          "check the names with lm_eval --tasks list, or pass --include-path for local task YAMLs")
    lm = harness_model(artifact, base, dtype, device, batch_size)
    return simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit, num_fewshot=num_fewshot,
                           log_samples=log_samples, bootstrap_iters=0)


def summary_rows(results: dict[str, Any]) -> list[tuple[str, str, float]]:
    """``(task, metric, value)`` for every numeric metric lm-eval reported (stderr left out)."""
    rows = []
    for task, metrics in sorted(results.get("results", {}).items()):
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and "stderr" not in key and key != "alias":
                rows.append((task, key.split(",")[0], float(value)))
    return rows
