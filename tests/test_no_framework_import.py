"""The layout's rules: common imports no deep-learning framework; its modules import each other without
circles, and the lower layers never import the ones above them."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_importing_common_loads_no_deep_learning_framework():
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                     for p in (ROOT / "common").glob("**/*.py") if p.name != "__main__.py")
    code = (f"import sys\nfor m in {modules!r}: __import__(m)\n"
            "bad = [m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules]\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def common_imports() -> dict[str, set[str]]:
    """module -> the common modules it imports (at module level or inside functions)."""
    graph = {}
    for path in (ROOT / "common").glob("**/*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("common"):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("common")}
        graph[name] = deps
    return graph


def test_common_has_no_import_circles_and_no_layer_imports_a_layer_above():
    graph = common_imports()

    def reaches(start: str, goal: str, seen: set) -> bool:
        for dep in graph.get(start, ()):
            if dep == goal or (dep not in seen and not seen.add(dep) and reaches(dep, goal, seen)):
                return True
        return False

    circles = [m for m in graph if reaches(m, m, set())]
    assert not circles, f"modules in an import circle: {sorted(circles)}"
    above = {"common.data": ("common.runs", "common.evaluation", "common.export", "common.bench", "common.explain"),
             "common.runs": ("common.evaluation", "common.export", "common.bench", "common.explain")}
    for module, deps in graph.items():
        for layer, forbidden in above.items():
            if module.startswith(layer):
                bad = [d for d in deps if d.startswith(forbidden)]
                assert not bad, f"{module} imports {bad}, a layer above it"
