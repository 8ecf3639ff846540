"""Dependencies point one way: portal ← marketplace ← inference. Checked on the source with `ast`."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import PROJECT_ROOT

# app: the apps it must never import
FORBIDDEN = {"portal": {"marketplace", "inference"}, "marketplace": {"inference"}}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """Absolute modules a file imports: import statements anywhere (also inside functions) and
    `import_module("…")` / `__import__("…")` with a literal name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in {"import_module", "__import__"} and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def violations(app: str) -> list[str]:
    forbidden = FORBIDDEN[app]
    files = sorted((PROJECT_ROOT / app).rglob("*.py"))
    assert files, f"no source found for {app}"
    return [
        f"{path.relative_to(PROJECT_ROOT)}:{line} imports {module}"
        for path in files
        for line, module in imported_modules(path.read_text())
        if module.split(".")[0] in forbidden
    ]


@pytest.mark.parametrize("app", sorted(FORBIDDEN))
def test_the_app_imports_only_the_apps_below_it(app):
    assert violations(app) == []


def test_the_check_sees_imports_however_they_are_written(tmp_path):
    source = (
        "import inference.models\n"
        "from marketplace import services\n"
        "from . import quotas\n"
        "def late():\n"
        "    from inference.v2 import error\n"
        "    importlib.import_module('marketplace.selectors')\n"
    )
    assert [module for _, module in imported_modules(source)] == [
        "inference.models",
        "marketplace",
        "inference.v2",
        "marketplace.selectors",
    ]
