"""One-line explanations for errors that libraries raise about things the user can fix.

``spul.interfaces.cli.main`` asks ``explain(err)`` before it falls back to "unexpected ... report it": a
folder that is a file, a read-only or full disk, a damaged safetensors or JSON file, text that is not UTF-8.
Each answer is ``(message, exit_code)`` with the message in the usual ``problem — fix: ...`` form.
"""

from __future__ import annotations

import errno
import json


def _name(err: OSError) -> str:
    name = err.filename if err.filename is not None else ""
    return f" {str(name)!r}" if name else ""


def _os_error(err: OSError) -> str | None:
    where = _name(err)
    code = err.errno
    if code == errno.ENOSPC or code == errno.EDQUOT:
        return (f"no space left on the device while writing{where} — fix: free disk space or set output_dir to a folder on another "
                "disk; finished steps and complete checkpoints are kept, run the same command again to continue")
    if code == errno.EROFS:
        return f"cannot write{where}: the file system is read-only — fix: set output_dir to a writable folder"
    if isinstance(err, PermissionError) or code in (errno.EACCES, errno.EPERM):
        return f"permission denied for{where} — fix: set output_dir (or the path) to a folder you can write, or change its permissions"
    if isinstance(err, (FileExistsError, NotADirectoryError)) or code in (errno.EEXIST, errno.ENOTDIR):
        return f"{where.strip() or 'a path'} (or a folder above it) is a file where a folder is needed — fix: set output_dir to a folder, or move the file away"
    if isinstance(err, IsADirectoryError) or code == errno.EISDIR:
        return f"{where.strip() or 'a path'} is a folder where a file is needed — fix: point at the file itself"
    if isinstance(err, FileNotFoundError) or code == errno.ENOENT:
        return f"{where.strip() or 'a file'} does not exist — fix: check the path"
    if code == errno.ENAMETOOLONG:
        return f"a file name is too long{where[:80]} — fix: choose a shorter output_dir or file name"
    if code == errno.EMFILE or code == errno.ENFILE:
        return "too many open files — fix: raise the limit (ulimit -n) or lower dataloader workers"
    return None


def explain(err: BaseException) -> tuple[str, int] | None:
    """``(one-line message, exit code)`` for a user-fixable library error, or None when it is a real bug."""
    if isinstance(err, OSError):
        text = _os_error(err)
        if text:
            return text, 2
    kind = type(err).__name__
    message = str(err).splitlines()[0][:200] if str(err) else ""
    if kind == "SafetensorError" or "safetensor" in type(err).__module__.lower() or "header too" in message.lower():
        return (f"a safetensors file is damaged or cut short ({message}) — fix: re-create it (spul unlearn / spul finetune) "
                "or copy it again from its source"), 2
    if isinstance(err, json.JSONDecodeError):
        return f"a JSON file is damaged ({message}) — fix: restore it or re-create the folder it belongs to", 2
    if isinstance(err, UnicodeDecodeError):
        return "a text file is not UTF-8 — fix: save it as UTF-8", 2
    return None
