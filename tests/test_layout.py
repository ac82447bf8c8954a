"""The layering of docs/design.md: the library never imports the application or the CLI, and
never names a command-line flag in an error message."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mflows"
APPLICATION = ("mflows.experiments", "mflows.cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules(predicate) -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if predicate(_module_name(p)))


def _is_application(name: str) -> bool:
    return name == "mflows.__main__" or any(
        name == a or name.startswith(a + ".") for a in APPLICATION
    )


LIBRARY = _modules(lambda name: not _is_application(name))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else None
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = (package or _module_name(path)).split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_the_walk_sees_the_library_and_the_application():
    names = {_module_name(p) for p in LIBRARY}
    assert {"mflows.models.factory", "mflows.registry", "mflows.evaluation.scoring"} <= names
    assert not any(_is_application(n) for n in names)
    assert _modules(_is_application)  # the application exists


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: _module_name(p))
def test_library_modules_do_not_import_the_application(path: Path):
    bad = sorted(i for i in _imports(path) if _is_application(i))
    assert not bad, f"{_module_name(path)} imports {bad}"


FLAG = re.compile(r"(?:^|[\s(`'\"])--[a-z][a-z-]+")


def _raised_strings(path: Path) -> list[str]:
    """String constants inside ``raise`` statements (f-string parts included)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and node.exc is not None:
            out.extend(
                c.value
                for c in ast.walk(node.exc)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            )
    return out


@pytest.mark.parametrize(
    "path", _modules(lambda n: not n.startswith("mflows.cli")), ids=lambda p: _module_name(p)
)
def test_no_command_line_flag_in_library_errors(path: Path):
    flags = [s for s in _raised_strings(path) if FLAG.search(s)]
    assert not flags, f"{_module_name(path)} names command-line flags in errors: {flags}"


def test_the_flag_heuristic_has_teeth(tmp_path: Path):
    bad = tmp_path / "bad.py"
    bad.write_text('def f(x):\n    raise ValueError(f"bad {x}; use --device cpu")\n')
    assert any(FLAG.search(s) for s in _raised_strings(bad))
