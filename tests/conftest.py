from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Tests (and the daemons they start, which inherit the environment) never write into the user's own cache.
os.environ.setdefault("BASISD_CACHE_DIR", tempfile.mkdtemp(prefix="basisd-test-cache-"))
CONFIGS = ROOT / "configs"


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """A private copy of configs/ that a test may edit freely."""
    target = tmp_path / "configs"
    shutil.copytree(CONFIGS, target)
    return target
