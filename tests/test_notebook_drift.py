"""One source of truth: the code a notebook presents as the package's is the package's code.

A notebook cell that starts with `# Same code as llm_course/<module>.py` shows final versions of the
package's classes and functions. Every top-level definition in such a cell must be identical (as an
abstract syntax tree, so comments and formatting may differ) to the definition of the same name in
that module. Cells without the marker may not define a public name of the package: later chapters
import earlier chapters' code instead of redefining it, and each chapter presents every class its lesson modules add (exception types aside; the
package's TOOLS modules are used by the notebooks without being shown line by line).
"""

import ast
import inspect
import json
import re
from pathlib import Path

import pytest

import llm_course

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MARKER = re.compile(r"^# Same code as llm_course/(\w+)\.py")
DEFINITIONS = (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)


def code_cells(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]


def top_level_definitions(source: str) -> dict[str, ast.AST]:
    # IPython magics and shell lines are not Python; they never hold definitions.
    python = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    return {node.name: node for node in ast.parse(python).body if isinstance(node, DEFINITIONS)}


def module_definitions(module_name: str) -> dict[str, ast.AST]:
    module = getattr(llm_course, module_name)
    return top_level_definitions(inspect.getsource(module))


def chapter_of(notebook: Path) -> int:
    return int(notebook.name[:2])


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.name)
def test_marked_cells_match_the_package(notebook):
    checked = 0
    for source in code_cells(notebook):
        match = MARKER.match(source)
        if not match:
            continue
        module_name = match.group(1)
        assert module_name in {m.__name__.rsplit(".", 1)[1] for m in llm_course.MODULES}, module_name
        package = module_definitions(module_name)
        definitions = top_level_definitions(source)
        assert definitions, f"{notebook.name}: a cell marked for {module_name}.py defines nothing"
        for name, node in definitions.items():
            assert name in package, f"{notebook.name} defines {name}, which llm_course/{module_name}.py lacks"
            assert ast.dump(node) == ast.dump(package[name]), (
                f"{notebook.name}: {name} differs from llm_course/{module_name}.py; copy the package's version "
                "into the notebook (or the notebook's into the package) so that learners read the real code"
            )
            checked += 1
    assert checked or chapter_of(notebook) == 0


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.name)
def test_unmarked_cells_do_not_redefine_the_package(notebook):
    for source in code_cells(notebook):
        defined = set(top_level_definitions(source)) & set(llm_course.__all__)
        if MARKER.match(source):
            chapter = chapter_of(notebook)
            earlier = {name for name in defined if llm_course.CHAPTER_OF[name] != chapter}
            assert not earlier, f"{notebook.name} redefines {earlier} from another chapter: import it from llm_course"
        else:
            assert not defined, f"{notebook.name} defines {defined} without the marker: import them or mark the cell"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.name)
def test_each_chapter_presents_its_classes(notebook):
    chapter = chapter_of(notebook)
    presented = set()
    for source in code_cells(notebook):
        if MARKER.match(source):
            presented |= set(top_level_definitions(source))
    classes = {
        name
        for module in llm_course.LESSONS
        for name in module.__all__
        if llm_course.CHAPTER_OF[name] == chapter
        and inspect.isclass(getattr(module, name))
        and not issubclass(getattr(module, name), Exception)
    }
    assert classes <= presented, f"{notebook.name} does not present {sorted(classes - presented)}"


def test_every_chapter_has_a_notebook():
    chapters = set(llm_course.CHAPTER_OF.values())
    assert chapters <= {chapter_of(notebook) for notebook in NOTEBOOKS}
