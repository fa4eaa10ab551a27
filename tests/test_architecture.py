"""The package's shape: stage scripts on top, library subpackages below them, dependencies pointing one way.

These read the code's imports (no import is executed), so a change that breaks the layout fails here
with the offending module named, not later as a cycle at import time.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "flexibert"
# The subpackages and what each may import; everything else inside flexibert/ is a stage script.
ALLOWED = {
    "utils": set(),
    "models": {"utils"},
    "data": {"utils"},
    "training": {"utils", "models", "data"},
    "cluster": {"utils"},
    "search": {"utils", "models", "data", "training", "cluster"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every flexibert/embeddings module a file imports (at any depth of the file, lazy and relative imports included)."""
    found = set()
    package = module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or node.level):
            # "from .x import y" in flexibert/models/ is "from flexibert.models.x import y".
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("flexibert", "embeddings")}


def library_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


def stage_scripts() -> set[str]:
    return {module_name(p) for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}


def test_the_top_of_the_package_holds_only_stage_scripts():
    for path in PACKAGE.glob("*.py"):
        if path.name != "__init__.py":
            assert 'if __name__ == "__main__":' in path.read_text(), f"{path.name} sits among the stage scripts but is not one"


def test_no_module_imports_a_stage_script():
    scripts = stage_scripts()
    for path in [*library_files(), *PACKAGE.glob("*.py"), *(REPO / "embeddings").glob("*.py")]:
        wrong = imported_modules(path) & scripts
        assert not wrong, f"{path.relative_to(REPO)} imports the stage script(s) {sorted(wrong)}; import the library instead"


def test_subpackages_depend_only_downwards():
    for path in library_files():
        own = path.relative_to(PACKAGE).parts[0]
        used = {name.split(".")[1] for name in imported_modules(path) if name.startswith("flexibert.") and name.count(".") >= 1}
        used = {name for name in used if name in ALLOWED} - {own}
        assert used <= ALLOWED[own], f"{path.relative_to(REPO)} ({own}) imports {sorted(used - ALLOWED[own])}"


def test_the_configuration_file_needs_no_torch():
    imports = imported_modules(PACKAGE / "models" / "configuration_flexibert.py")
    text = (PACKAGE / "models" / "configuration_flexibert.py").read_text()
    assert "import torch" not in text and not any(name.startswith("flexibert.models.modeling") for name in imports)


def test_no_import_cycle_between_modules():
    graph = nx.DiGraph()
    files = [*PACKAGE.rglob("*.py"), *(REPO / "embeddings").glob("*.py")]
    known = {module_name(p) for p in files}
    for path in files:
        for name in imported_modules(path):
            # "from package import name" may name a module or an attribute: keep the longest known module.
            target = next((m for m in (name, name.rpartition(".")[0]) if m in known), None)
            if target and target != module_name(path) and not module_name(path).startswith(target + "."):
                graph.add_edge(module_name(path), target)
    cycles = list(itertools.islice(nx.simple_cycles(graph), 3))
    assert not cycles, f"import cycles: {cycles}"


def test_the_graph_library_does_not_depend_on_the_model_package():
    for path in (REPO / "embeddings").glob("*.py"):
        wrong = {name for name in imported_modules(path) if name.startswith("flexibert")}
        assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}: embeddings/ must stay free of torch and transformers"


def test_the_graph_library_imports_without_torch_or_transformers():
    """What the README promises, at run time: embeddings/ alone (building a library with MDS) loads neither."""
    import subprocess
    import sys

    modules = sorted(module_name(p) for p in (REPO / "embeddings").glob("*.py") if p.stem != "__init__")
    probe = f"import sys, {', '.join(modules)}; print(sorted({{'torch', 'transformers'}} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert loaded.strip() == "[]", loaded
