"""Put each chapter's exercises into its notebook, as its last section, "Exercises", after the Summary.

Usage: python scripts/insert_exercises.py notebooks/0*.ipynb

The section is one Markdown cell with the tasks, then an answer cell (the stub to fill in) and a check cell
for each exercise, with nbgrader's cell metadata (`llm_course.exercise_cells`). Running the script again
replaces the section, so edits to the exercises in llm_course/exercise_bank/ reach the notebooks. Re-execute
the notebooks afterwards (`make notebooks`).
"""

import sys
from pathlib import Path

import nbformat

from llm_course import exercise_cells, exercise_ids

SECTION = "llm_course_exercises"  # cell metadata key that marks the section's cells


def section(chapter: int) -> list:
    ids = exercise_ids(chapter)
    tasks, cells = [], []
    for exercise_id in ids:
        task, answer, check = exercise_cells(exercise_id)
        tasks.append(task.source)
        cells += [answer, check]
    intro = nbformat.v4.new_markdown_cell(
        "## Exercises\n\n"
        "Each exercise asks for one function. Write it in its cell, where it says `# YOUR CODE HERE`, and run the "
        "cell below it: the check runs your function on a few inputs, edge cases included, and says whether it "
        "is right or exactly what is wrong (the input, what was expected and what came back). The checks never "
        f"show a solution; `solutions/ch{chapter:02d}.py` has them, for when you are done.\n\n" + "\n\n".join(tasks)
    )
    for cell in [intro, *cells]:
        cell.metadata[SECTION] = True
    return [intro, *cells]


def insert(path: Path) -> None:
    chapter = int(path.name[:2])
    notebook = nbformat.read(path, as_version=4)
    cells = [cell for cell in notebook.cells if not cell.metadata.get(SECTION)]
    notebook.cells = cells + section(chapter)
    nbformat.write(notebook, path)
    print(f"{path}: {len(exercise_ids(chapter))} exercises, {len(notebook.cells)} cells")


if __name__ == "__main__":
    for name in sys.argv[1:]:
        insert(Path(name))
