"""The library's public surface, and the rule that it never imports Kamailio."""

import ast
from pathlib import Path

import stirshaken

PACKAGE = Path(stirshaken.__file__).parent


def test_all_is_sorted_and_complete() -> None:
    assert stirshaken.__all__ == sorted(stirshaken.__all__)
    public = {
        name
        for name, value in vars(stirshaken).items()
        if not name.startswith("_") and not isinstance(value, type(stirshaken))
    }
    assert public == set(stirshaken.__all__)


def test_stirshaken_never_imports_ksr() -> None:
    for source in PACKAGE.glob("*.py"):
        tree = ast.parse(source.read_text(), filename=str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name == "KSR" or name.startswith("KSR.") for name in names), source
