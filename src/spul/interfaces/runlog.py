"""``OUTPUT/run.log``: each training or evaluation command appends its log (INFO and up, training losses
included) there, while the console keeps its own level."""

from __future__ import annotations

import logging
import os
import sys

_RUN_LOGS: list[tuple[logging.Handler, int, list[logging.Handler]]] = []  # handler, root level before, handlers re-levelled


def start_run_log(cfg, command: str) -> None:
    """Append this command's log to ``cfg.out / run.log``. One process of a multi-process launch writes it."""
    if os.environ.get("RANK", "0") != "0":
        return
    cfg.out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(cfg.out / "run.log", encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    relevelled = [h for h in root.handlers if h.level == logging.NOTSET]
    for existing in relevelled:
        existing.setLevel(root.level)  # the console stays at WARNING (or INFO with -v)
    _RUN_LOGS.append((handler, root.level, relevelled))
    root.addHandler(handler)
    root.setLevel(min(root.level, logging.INFO))
    from spul import __version__

    logging.getLogger("spul").info("spul %s: spul %s", __version__, " ".join(sys.argv[1:]) or command)


def close_run_logs(error: str | None = None) -> None:
    """Close the run logs this process opened, recording ``error`` (the one-line message) if the command failed."""
    root = logging.getLogger()
    while _RUN_LOGS:
        handler, level, relevelled = _RUN_LOGS.pop()
        if error:
            handler.handle(logging.LogRecord("spul", logging.ERROR, __file__, 0, error, None, None))
        root.removeHandler(handler)
        handler.close()
        root.setLevel(level)
        for existing in relevelled:
            existing.setLevel(logging.NOTSET)
