"""The package's shape: no module imports one that imports it back, at the top or lazily."""

import ast
from pathlib import Path

from stkcodec.checkpoint import KIND_MODULES

PACKAGE = Path(__file__).resolve().parent.parent / "stkcodec"


def _imports(path: Path) -> set[str]:
    """The stkcodec modules a file imports anywhere (inside functions too), except for type checking."""
    tree = ast.parse(path.read_text())
    typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and id(node) not in typing_only:
            found.update([node.module] if node.module else [alias.name for alias in node.names])
    return {name.split(".")[0] for name in found}


def test_no_import_cycles():
    graph = {path.stem: _imports(path) for path in PACKAGE.glob("*.py")}
    graph["checkpoint"] |= {name.rsplit(".", 1)[1] for name in KIND_MODULES.values()}  # imported by name
    assert {"tokenizer", "prior"} <= graph["checkpoint"] and "exact" in graph["prior"]  # the test sees lazy ones

    def cycle_from(start, node, path):
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return path + [nxt]
            if nxt not in path:
                found = cycle_from(start, nxt, path + [nxt])
                if found:
                    return found
        return None

    cycles = [cycle for module in graph if (cycle := cycle_from(module, module, [module]))]
    assert not cycles, " / ".join(" -> ".join(cycle) for cycle in cycles)
