from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """A private copy of configs/ that a test may edit freely."""
    target = tmp_path / "configs"
    shutil.copytree(CONFIGS, target)
    return target
