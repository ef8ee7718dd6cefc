"""The layers the README and pyproject.toml state, checked on the source: every import (lazy ones in functions
included) goes down the stack, and no two modules import each other, directly or around a circle."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"wtours_base": ROOT / "wtours_base", "wtours_analysis": ROOT / "analysis", "wtours": ROOT / "wtours",
            "dora": ROOT / "dora"}
# Lowest first; a module may import its own layer and those before it.
LAYERS = ["wtours_base", "wtours_analysis", "wtours", "dora.training", "dora.evaluation", "dora"]


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def layer(module: str) -> int:
    return max(i for i, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + "."))


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project's modules that `path` imports (`from a.b import c` counts a.b.c when that is a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names]
        else:
            continue
        out.update(n for n in names if n in known)
    return out


def test_every_import_goes_down_the_layers():
    known = modules()
    assert {"dora.training.train", "dora.evaluation.encoder", "dora.study", "wtours.media.objects"} <= set(known)
    upward = [f"{m} ({LAYERS[layer(m)]}) imports {i} ({LAYERS[layer(i)]})"
              for m, path in known.items() for i in imports(path, known) if layer(i) > layer(m)]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    known = modules()
    graph = {m: imports(p, known) - {m} for m, p in known.items()}
    # Packages import their own submodules by being their parents; only module-to-module edges matter.
    graph = {m: {i for i in deps if not m.startswith(i + ".") and not i.startswith(m + ".")} for m, deps in graph.items()}
    state, cycle = {}, []

    def visit(m, stack):
        state[m] = "open"
        for i in sorted(graph[m]):
            if state.get(i) == "open":
                cycle.append(" -> ".join(stack[stack.index(i):] + [i]))
            elif i not in state:
                visit(i, stack + [i])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycle, "\n".join(cycle)


def test_every_package_folder_is_installed():
    """pyproject lists its packages by hand: a new package folder left out of it imports from a checkout but is
    missing from the wheel (dora.training.methods was, and only a GPU machine installing the wheel found it)."""
    import tomllib

    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = {name: ROOT / folder for name, folder in setup["package-dir"].items()}
    listed = set(setup["packages"])
    found = set()
    for top in ("wtours_base", "wtours", "dora", "wtours_analysis"):
        base = dirs.get(top, ROOT / top)
        for init in base.rglob("__init__.py"):
            found.add(".".join([top, *init.parent.relative_to(base).parts]))
    assert found == listed, {"not installed": sorted(found - listed), "listed, not a package": sorted(listed - found)}
