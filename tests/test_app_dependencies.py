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
        "    from inference.protocols.oip import error\n"
        "    importlib.import_module('marketplace.selectors')\n"
    )
    assert [module for _, module in imported_modules(source)] == [
        "inference.models",
        "marketplace",
        "inference.protocols.oip",
        "marketplace.selectors",
    ]


# --- no circles inside an app -------------------------------------------------------------------------------


def module_name(path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def internal_edges(app: str) -> dict[str, set[str]]:
    """Module → the modules of the same app it imports (relative or absolute, at the top or inside functions).
    `from . import name` counts name as a module when it is one."""
    paths = {
        module_name(path): path
        for path in (PROJECT_ROOT / app).rglob("*.py")
        if "migrations" not in path.parts
    }
    edges: dict[str, set[str]] = {module: set() for module in paths}
    for module, path in paths.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base
                    for alias in node.names
                ]
            for target in targets:
                while target and target not in paths:
                    target = target.rpartition(".")[0]
                if target and target != module and not paths[target].name == "__init__.py":
                    edges[module].add(target)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                found.append([*trail[trail.index(target) :], target])
            elif target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    return found


@pytest.mark.parametrize("app", ["portal", "marketplace", "inference"])
def test_no_module_imports_itself_back_through_others(app):
    assert circles(internal_edges(app)) == []


def test_the_circle_check_finds_a_late_import_back():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert circles(edges) == [["a", "b", "c", "a"]]
