"""Copy the package's current code into the notebooks' marked cells (the ones tests/test_notebook_drift.py checks).

Usage: python scripts/sync_notebook_code.py notebooks/04_pretraining.ipynb [...]

In every code cell that starts with `# Same code as llm_course/<module>.py`, each top-level function or class
is replaced by the module's definition of the same name (decorators and comments included); everything else in
the cell stays. Re-execute the notebook afterwards (`make notebooks`): its outputs may change.
"""

import ast
import importlib
import re
import sys
from pathlib import Path

import nbformat

MARKER = re.compile(r"^# Same code as llm_course/(\w+)\.py")
DEFINITIONS = (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)


def definition_spans(source: str) -> dict[str, tuple[int, int]]:
    """name -> (first line, last line), 0-based and inclusive, of each top-level definition, decorators included."""
    spans = {}
    for node in ast.parse(source).body:
        if isinstance(node, DEFINITIONS):
            first = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list]) - 1
            spans[node.name] = (first, node.end_lineno - 1)
    return spans


def sync_cell(source: str, module_name: str) -> str:
    module_source = Path(importlib.import_module(f"llm_course.{module_name}").__file__).read_text(encoding="utf-8")
    module_lines = module_source.splitlines()
    package = definition_spans(module_source)
    lines = source.splitlines()
    for name, (first, last) in sorted(definition_spans(source).items(), key=lambda item: -item[1][0]):
        if name not in package:
            raise SystemExit(f"the cell defines {name}, which llm_course/{module_name}.py lacks")
        start, end = package[name]
        lines[first : last + 1] = module_lines[start : end + 1]
    return "\n".join(lines)


def main(paths: list[str]) -> None:
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        changed = 0
        for cell in notebook.cells:
            match = MARKER.match(cell.source) if cell.cell_type == "code" else None
            if match:
                new = sync_cell(cell.source, match.group(1))
                changed += new != cell.source
                cell.source = new
        nbformat.write(notebook, path)
        print(f"{path}: {changed} marked cell(s) updated")


if __name__ == "__main__":
    main(sys.argv[1:])
