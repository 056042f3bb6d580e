"""Size limits the house style sets for accel/: a module a reader can hold (300 lines) and a
function that fits on a screen (60 lines)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "accel"
MODULE_LINES = 300
FUNCTION_LINES = 60


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_the_limit():
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in _modules()
        if (n := len(path.read_text().splitlines())) > MODULE_LINES
    }
    assert not long, f"modules over {MODULE_LINES} lines: {long}"


def test_no_function_is_over_the_limit():
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.name}"] = n
    assert not long, f"functions over {FUNCTION_LINES} lines: {long}"
