"""Small pieces of operator-relevant state that must survive a restart (the drawdown breaker's level).

One JSON file per key under the state directory, replaced atomically (write a temporary file, fsync, rename,
fsync the directory) so a crash mid-write leaves the previous state, never a torn file. The journal of the
persistence issue will subsume this; the atomic-replace discipline stays.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class StateStore:
    def __init__(self, directory: str | Path) -> None:
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def load(self, key: str) -> dict[str, Any] | None:
        path = self._dir / f"{key}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # edited by hand, or not ours
            raise ValueError(f"{path}: not a JSON object written by basisd ({type(exc).__name__}: {exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return data

    def save(self, key: str, data: dict[str, Any]) -> None:
        path = self._dir / f"{key}.json"
        tmp = path.with_suffix(".json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
