"""A fitted local model kept on disk, so a restart does not refit what it fitted before.

Fitting the local tier with a dense encoder takes about 40 s of CPU on 10,000 examples (BANKING77's
training split, lbfgs, 77 classes), over the 30 s a restart may keep a pod unready. The fitted parts
are saved under a key that changes whenever anything that shaped them changes (the training
examples, the taxonomy, the encoder, the fitting settings, this code's version and the versions of
scikit-learn and numpy), so a stale model is never read back: a different key is simply a miss.

The file is a pickle, and reading a pickle runs code, so only files this process's user owns in a
directory no one else can write are read; anything else is ignored with a warning and refitted.
The cache is an optimisation: every failure to read or write it is a warning, never a failed start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KEPT_FILES = 3
"""Models kept per directory: the current one and two before it (a rollback reuses its model)."""
PREFIX = "local-model-"
SUFFIX = ".pickle"


def cache_key(parts: Iterable[bytes | str]) -> str:
    """SHA-256 over the parts, each length-prefixed so no two lists of parts hash alike."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def trusted(path: Path) -> bool:
    """Owned by this user and not writable by group or others (checked without following links)."""
    info = path.lstat()
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


class ModelCache:
    """``load(key)`` / ``save(key, value)`` in one directory, created private (0700) on first save."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / f"{PREFIX}{key}{SUFFIX}"

    def load(self, key: str) -> Any | None:
        path = self.path(key)
        try:
            if not path.exists():
                return None
            if not (trusted(self.directory) and trusted(path)):
                log.warning(
                    "LOCAL_MODEL_CACHE: ignoring %s: the directory and the file must belong to this user "
                    "and be writable by it alone",
                    path,
                )
                return None
            with path.open("rb") as file:
                return pickle.load(file)  # trusted() above: our own file in our own directory
        except Exception as exc:  # a damaged or foreign file is a miss, never a failed start-up
            log.warning("LOCAL_MODEL_CACHE: cannot read %s (%s); fitting again", path, type(exc).__name__)
            return None

    def save(self, key: str, value: Any) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".partial-", delete=False) as file:
                pickle.dump(value, file, protocol=pickle.HIGHEST_PROTOCOL)
            Path(file.name).replace(self.path(key))  # atomic: a reader sees the old file or the whole new one
            self.prune()
        except OSError as exc:
            log.warning(
                "LOCAL_MODEL_CACHE: cannot write to %s (%s); the model is not cached",
                self.directory,
                exc.strerror,
            )

    def prune(self) -> None:
        """Keep the ``KEPT_FILES`` most recently written models."""
        saved = sorted(
            self.directory.glob(f"{PREFIX}*{SUFFIX}"), key=lambda p: p.stat().st_mtime, reverse=True
        )
        for old in saved[KEPT_FILES:]:
            old.unlink(missing_ok=True)
