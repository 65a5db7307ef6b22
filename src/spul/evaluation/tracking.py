"""Evaluation tables into the same tracking run as the training (TensorBoard scalars + text, a W&B table).

Training logs reach the trackers through the Trainer's ``report_to``; the evaluation runs after the Trainer has
finished, so this small logger writes its numbers to the same TensorBoard folder / W&B run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

log = logging.getLogger(__name__)


def _tag(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def metric_scalars(results: Sequence) -> dict[str, float]:
    """``evaluate/<model>/<split>/<metric>`` → value, for every row of the table."""
    scalars = {}
    for result in results:
        for split, metrics in result.metrics.items():
            for name, value in metrics.as_dict().items():
                if name != "n":
                    scalars[f"evaluate/{_tag(result.name)}/{split}/{name}"] = float(value)
    return scalars


def log_evaluation(results: Sequence, table_markdown: str, report_to: Sequence[str], logging_dir: str | None,
                   run_name: str | None = None, step: int = 0) -> list[str]:
    """Send the evaluation to each tracker in ``report_to``; returns the trackers written to."""
    wanted = set(report_to) - {"none"}
    if not wanted:
        return []
    scalars = metric_scalars(results)
    written = []
    if wanted & {"tensorboard", "all"}:
        writer_cls = None
        try:
            from torch.utils.tensorboard import SummaryWriter as writer_cls
        except ImportError:
            try:
                from tensorboardX import SummaryWriter as writer_cls
            except ImportError:
                if "tensorboard" in wanted:
                    log.warning("report_to has tensorboard but neither tensorboard nor tensorboardX is installed: pip install 'spul[track]'")
        if writer_cls is not None and logging_dir:
            writer = writer_cls(log_dir=logging_dir)
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, global_step=step)
            writer.add_text("evaluate/table", table_markdown, global_step=step)
            writer.close()
            written.append("tensorboard")
    if wanted & {"wandb", "all"}:
        try:
            import wandb
        except ImportError:
            wandb = None
            if "wandb" in wanted:
                log.warning("report_to has wandb but wandb is not installed: pip install 'spul[track]'")
        if wandb is not None:
            run = wandb.run or wandb.init(name=run_name, resume="allow")
            names = sorted({k.split("/")[2] for k in scalars})
            table = wandb.Table(columns=["model", *names])
            for result in results:
                table.add_data(result.name, *[round(100 * result.metrics[s].accuracy, 2) if s in result.metrics else None for s in names])
            run.log({**scalars, "evaluate/accuracy_table": table})
            written.append("wandb")
    for other in sorted(wanted - {"tensorboard", "wandb", "all"}):
        log.info("evaluation table not sent to %s (only tensorboard and wandb get it); it is in the report folder", other)
    return written
