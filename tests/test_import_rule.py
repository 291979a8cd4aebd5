"""The import rule of architecture.md: vidlm/, ingest/ and index/ never import each other, and
nothing but app/ itself imports app/. Checked on the source (every import statement, including
ones inside functions), so a lazy import cannot slip past."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LEAVES = ("vidlm", "ingest", "index")
PACKAGES = (*LEAVES, "app")


def imported_top_levels(path: Path) -> set[str]:
    """Top-level package names that a Python file imports (absolute imports only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("package", LEAVES)
def test_leaf_packages_do_not_import_each_other(package: str) -> None:
    forbidden = set(PACKAGES) - {package}
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_top_levels(path) & forbidden)
        for path in python_files(ROOT / package)
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"{package}/ imports other project packages: {offenders}"


def test_nothing_imports_app() -> None:
    folders = [ROOT / p for p in LEAVES] + [ROOT / d for d in ("bench", "recipe") if (ROOT / d).is_dir()]
    offenders = [
        str(path.relative_to(ROOT))
        for folder in folders
        for path in python_files(folder)
        if "app" in imported_top_levels(path)
    ]
    assert not offenders, f"these files import app/: {offenders}"


def test_checker_sees_lazy_imports(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from ingest.decode import decode\n    import index.store\n")
    assert imported_top_levels(sample) == {"ingest", "index"}
