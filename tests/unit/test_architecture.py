"""The import rules of DESIGN.md §2: a pure domain, actors that know ports and not adapters."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "daemon" / "domain").glob("*.py")), ids=lambda p: p.name)
def test_the_domain_imports_only_the_standard_library_and_itself(path: Path) -> None:
    foreign = {n for n in imports(path)
               if n.split(".")[0] not in sys.stdlib_module_names and not n.startswith("daemon.domain")}
    assert not foreign, f"{path.name} imports {sorted(foreign)}"


@pytest.mark.parametrize("path", sorted((ROOT / "actors").glob("*.py")), ids=lambda p: p.name)
def test_actors_depend_on_ports_never_on_adapters_or_libraries(path: Path) -> None:
    banned = {n for n in imports(path) if n.split(".")[0] in ("ccxt", "web3", "aiohttp")
              or n.startswith(("daemon.venues", "daemon.app"))}
    assert not banned, f"{path.name} imports {sorted(banned)}"
