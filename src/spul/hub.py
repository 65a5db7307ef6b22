"""Share an artifact: push its folder to a Hugging Face hub repo, or to a local folder laid out the same way.

Both targets take the same file selection and the same two calls (create the repo, upload the folder), so the
offline test of ``--to-dir`` exercises the code the hub push runs.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
from pathlib import Path
from typing import Any

from spul.artifacts import CARD, read_metadata, write_model_card
from spul.errors import ArtifactError, ConfigError, SpulError

# never shared: training checkpoints, temp files from interrupted writes, OS clutter
IGNORE_PATTERNS = ["checkpoints/*", "*/checkpoints/*", ".*", "*/.*", "*.tmp", "__pycache__/*", "*.pyc"]
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


class PushError(SpulError):
    exit_code = 4


def files_to_push(folder: Path) -> list[str]:
    """Relative paths (POSIX) of the artifact files a push sends, in a stable order."""
    chosen = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not any(fnmatch.fnmatch(rel, pat) for pat in IGNORE_PATTERNS):
            chosen.append(rel)
    return chosen


class LocalTarget:
    """A hub stand-in: ``ROOT/OWNER/NAME`` receives the files (replaced as a whole, modes 0644/0755)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def create_repo(self, repo_id: str, private: bool) -> str:
        (self.root / repo_id).parent.mkdir(parents=True, exist_ok=True)
        return str((self.root / repo_id).resolve())

    def upload_folder(self, folder: Path, repo_id: str, files: list[str], message: str) -> str:
        from spul.io import atomic_dir

        with atomic_dir(self.root / repo_id) as tmp:
            for rel in files:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / rel, tmp / rel)
            (tmp / ".commit_message").write_text(message + "\n", encoding="utf-8")
        return str((self.root / repo_id).resolve())


class HubTarget:
    """The Hugging Face hub through ``huggingface_hub.HfApi`` (token from ``--token``, HF_TOKEN or ``hf auth login``)."""

    def __init__(self, token: str | None = None, endpoint: str | None = None, revision: str | None = None):
        try:
            from huggingface_hub import HfApi
        except ImportError:
            raise PushError("spul push needs huggingface_hub", "pip install huggingface_hub") from None
        self.api = HfApi(endpoint=endpoint, token=token)
        self.revision = revision

    def create_repo(self, repo_id: str, private: bool) -> str:
        return str(self.api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True))

    def upload_folder(self, folder: Path, repo_id: str, files: list[str], message: str) -> str:
        info = self.api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", revision=self.revision,
                                      commit_message=message, allow_patterns=files, ignore_patterns=IGNORE_PATTERNS)
        return str(getattr(info, "commit_url", info))


def push_artifact(folder: str | os.PathLike, repo_id: str, target: Any, private: bool = True) -> dict[str, Any]:
    """Check ``folder`` is a spul artifact (card written if missing) and send it to ``target``."""
    folder = Path(folder)
    if not REPO_ID.match(repo_id or ""):
        raise ConfigError(f"--repo {repo_id!r} is not a repo id", "write OWNER/NAME, e.g. my-org/sst2-forget-prompt")
    meta = read_metadata(folder)
    if meta.get("method") == "spul" and "spul" not in ((folder / CARD).read_text(encoding="utf-8", errors="replace")
                                                       if (folder / CARD).is_file() else ""):
        write_model_card(folder)  # an artifact from before model cards
    if str(meta.get("base_model", "")).startswith(("/", ".")):
        # an absolute local base resolves only on this machine; say so rather than fail for the downloader later
        import logging

        logging.getLogger(__name__).warning("artifact's base model is the local folder %s: people you share it with need "
                                            "that model too (push it, or familiarise from a hub model)", meta["base_model"])
    files = files_to_push(folder)
    if "spul.json" not in files:
        raise ArtifactError(f"{str(folder)!r} has no spul.json to push", "point at the folder written by spul unlearn")
    message = f"spul artifact ({meta.get('method', 'spul')}) for {meta.get('base_model', '?')}"
    try:
        where = target.create_repo(repo_id, private)
        url = target.upload_folder(folder, repo_id, files, message)
    except SpulError:
        raise
    except OSError as err:
        raise PushError(f"could not write {repo_id!r} ({str(err).splitlines()[0][:150]})", "check the target folder's permissions and free space") from None
    except Exception as err:  # noqa: BLE001 - hub/network/auth errors from huggingface_hub: one line
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise PushError(f"push to {repo_id!r} failed: {type(err).__name__}: {first}",
                        "check network access and your token (HF_TOKEN or `hf auth login`) and that you may write to the repo") from None
    return {"repo": repo_id, "where": where, "url": url, "files": files}
