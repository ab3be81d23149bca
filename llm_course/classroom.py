"""Chapter 1: the teacher's commands: the student edition, the teacher edition, and grading.

    llm-course student-edition notebooks/ class/      # solutions removed, outputs of exercise cells cleared
    llm-course teacher-edition notebooks/ teacher/    # the solutions/ folder merged into the answer cells
    llm-course grade submissions/ --out results.csv --timeout 120

The notebooks follow nbgrader's conventions (https://nbgrader.readthedocs.io): an answer cell is an nbgrader
solution cell, whose solution (in a teacher's copy) lies between `### BEGIN SOLUTION` and `### END
SOLUTION`, and a check cell is an nbgrader grade cell that calls `check_exercise`. Grading runs each
submission in a fresh Jupyter kernel (nbclient) and reads the results that the checks display (see
`llm_course.exercises.CHECK_MIME`). `llm-course student-edition`, `teacher-edition` and `grade` run them (cli.py adds them to the command).
"""

from __future__ import annotations

import argparse
import ast
import copy
import csv
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .exercises import STUB_LINES, check_source, get_exercise, result_from_output

# The command-line plumbing (COMMANDS, add_commands, run, main) stays in this module, like cli.py's.
__all__ = [
    "SubmissionResult",
    "grade_notebook",
    "grade_submissions",
    "student_edition",
    "student_notebook",
    "teacher_edition",
    "teacher_notebook",
]

CHAPTER = 1

PROG = "llm-course"
COMMANDS = ("student-edition", "teacher-edition", "grade")
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
TEXT_STUB = "YOUR ANSWER HERE"  # nbgrader's stub for a written (markdown) answer
# The default solutions: the repository's solutions/ folder, next to the package in a checkout.
SOLUTIONS_DIR = Path(__file__).resolve().parent.parent / "solutions"
GRADE_ID = re.compile(r"^(answer|check)-(\d+)-(\d+)$")
CHECK_CALL = re.compile(r"check_exercise\(\s*[\"'](\d+\.\d+)[\"']")


# --- reading a notebook's exercise cells -----------------------------------------------------------------

def _nbgrader(cell) -> dict[str, Any]:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_answer_cell(cell) -> bool:
    return bool(_nbgrader(cell).get("solution"))


def is_check_cell(cell) -> bool:
    return bool(_nbgrader(cell).get("grade")) or (cell.cell_type == "code" and bool(CHECK_CALL.search(cell.source)))


def cell_exercise(cell) -> str | None:
    """The exercise id of an answer or check cell ("4.2"), from its nbgrader grade_id or its check call."""
    match = GRADE_ID.match(str(_nbgrader(cell).get("grade_id", "")))
    if match:
        return f"{match.group(2)}.{match.group(3)}"
    call = CHECK_CALL.search(cell.source) if cell.cell_type == "code" else None
    return call.group(1) if call else None


def _clear_outputs(cell) -> None:
    if cell.cell_type == "code":
        cell.outputs = []
        cell.execution_count = None


def _marker_lines(source: str) -> list[int]:
    return [i for i, line in enumerate(source.split("\n")) if "BEGIN SOLUTION" in line or "END SOLUTION" in line]


# --- the student edition ----------------------------------------------------------------------------------

def strip_solutions(source: str, stub: Sequence[str]) -> str:
    """Replace every region between the BEGIN SOLUTION and END SOLUTION lines (markers included) by the
    stub lines, indented as the BEGIN line, as nbgrader's ClearSolutions does."""
    lines, in_solution = [], False
    for line in source.split("\n"):
        if "BEGIN SOLUTION" in line:
            if in_solution:
                raise ValueError("a BEGIN SOLUTION line inside a solution region: close the first one with "
                                 "END SOLUTION")
            in_solution = True
            indent = line[: len(line) - len(line.lstrip())]
            lines.extend(indent + stub_line for stub_line in stub)
        elif "END SOLUTION" in line:
            if not in_solution:
                raise ValueError("an END SOLUTION line without a BEGIN SOLUTION line before it")
            in_solution = False
        elif not in_solution:
            lines.append(line)
    if in_solution:
        raise ValueError("a BEGIN SOLUTION line without its END SOLUTION line")
    return "\n".join(lines)


def student_notebook(notebook, name: str = "the notebook"):
    """The student edition of a notebook (a copy): solution regions replaced by the stub, outputs of the
    answer and check cells cleared, everything else kept. An answer cell without markers is kept as it is
    (the course's notebooks hold the stub already)."""
    notebook = copy.deepcopy(notebook)
    for number, cell in enumerate(notebook.cells, 1):
        if _marker_lines(cell.source):
            if not is_answer_cell(cell):
                raise ValueError(
                    f"{name}, cell {number}: a solution region in a cell that is not an answer cell (an nbgrader "
                    "solution cell), so it would reach the students: mark the cell or remove the markers"
                )
            stub = STUB_LINES if cell.cell_type == "code" else (TEXT_STUB,)
            try:
                cell.source = strip_solutions(cell.source, stub)
            except ValueError as err:
                raise ValueError(f"{name}, cell {number}: {err}") from None
        if is_answer_cell(cell) or is_check_cell(cell):
            _clear_outputs(cell)
    return notebook


# --- the teacher edition ----------------------------------------------------------------------------------

def solution_body(exercise_id: str, solutions_dir: Path = SOLUTIONS_DIR) -> str:
    """The body (after its docstring) of the solution function of an exercise, dedented, from
    solutions_dir/chNN.py."""
    ex = get_exercise(exercise_id)
    path = Path(solutions_dir) / f"ch{ex.chapter:02d}.py"
    if not path.is_file():
        raise ValueError(f"no solutions file {path} for exercise {ex.id}: give the folder with --solutions DIR")
    source = path.read_text(encoding="utf-8")
    lines = source.split("\n")
    for node in ast.parse(source, filename=str(path)).body:
        if isinstance(node, ast.FunctionDef) and node.name == ex.function:
            first = node.body[0]
            has_docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                first.value.value, str)
            start = first.end_lineno if has_docstring else node.body[0].lineno - 1  # 0-based first body line
            body = lines[start : node.end_lineno]
            indent = min(len(line) - len(line.lstrip()) for line in body if line.strip())
            return "\n".join(line[indent:] for line in body).strip("\n")
    raise ValueError(f"{path} does not define {ex.function}, the solution of exercise {ex.id}")


def _with_solution(source: str, body: str) -> str:
    """The answer cell's source with `body` between the markers, in place of an earlier solution region
    or of the stub lines."""
    lines = source.split("\n")
    markers = _marker_lines(source)
    if len(markers) == 2:
        start, end = markers
    else:
        stub_at = [i for i in range(len(lines) - 1)
                   if (lines[i].strip(), lines[i + 1].strip()) == STUB_LINES]
        if len(markers) or len(stub_at) != 1:
            raise ValueError("the answer cell holds neither one solution region nor the stub lines "
                             f"{STUB_LINES[0]!r} / {STUB_LINES[1]!r}")
        start = end = stub_at[0]
        end += 1
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    solution = [indent + line if line else line for line in body.split("\n")]
    return "\n".join(lines[:start] + [indent + BEGIN, *solution, indent + END] + lines[end + 1 :])


def teacher_notebook(notebook, solutions_dir: Path = SOLUTIONS_DIR, name: str = "the notebook"):
    """A copy of the notebook whose answer cells hold their solution between nbgrader's markers (an
    nbgrader source notebook), with the outputs of the answer and check cells cleared."""
    notebook = copy.deepcopy(notebook)
    for number, cell in enumerate(notebook.cells, 1):
        exercise_id = cell_exercise(cell) if is_answer_cell(cell) and cell.cell_type == "code" else None
        if exercise_id is not None:
            try:
                cell.source = _with_solution(cell.source, solution_body(exercise_id, solutions_dir))
            except ValueError as err:
                raise ValueError(f"{name}, cell {number} (exercise {exercise_id}): {err}") from None
        if is_answer_cell(cell) or is_check_cell(cell):
            _clear_outputs(cell)
    return notebook


# --- writing an edition ------------------------------------------------------------------------------------

def _write_edition(src_dir: Path, dest_dir: Path, transform: Callable) -> list[Path]:
    import nbformat

    src_dir, dest_dir = Path(src_dir), Path(dest_dir)
    if not src_dir.is_dir():
        raise ValueError(f"{src_dir} is not a folder of notebooks")
    if dest_dir.resolve() == src_dir.resolve():
        raise ValueError(f"the destination {dest_dir} is the source folder: give another folder, so that the "
                         "notebooks you start from are not overwritten")
    sources = sorted(src_dir.glob("*.ipynb"))
    if not sources:
        raise ValueError(f"{src_dir} holds no notebooks (*.ipynb)")
    editions = []
    for path in sources:  # transform every notebook before writing any, so an error leaves nothing half done
        try:
            notebook = nbformat.read(path, as_version=4)
        except Exception as err:  # nbformat raises JSON, validation and key errors alike
            raise ValueError(f"{path} cannot be read as a notebook: {type(err).__name__}: {err}") from None
        editions.append((dest_dir / path.name, transform(notebook, name=str(path))))
    dest_dir.mkdir(parents=True, exist_ok=True)
    for target, notebook in editions:
        nbformat.write(notebook, target)
    return [target for target, _ in editions]


def student_edition(src_dir: Path | str, dest_dir: Path | str) -> list[Path]:
    """Write the student edition of every notebook of src_dir into dest_dir (see `student_notebook`)."""
    return _write_edition(Path(src_dir), Path(dest_dir), student_notebook)


def teacher_edition(src_dir: Path | str, dest_dir: Path | str, solutions_dir: Path | str = SOLUTIONS_DIR) -> list[Path]:
    """Write the teacher edition of every notebook of src_dir into dest_dir (see `teacher_notebook`)."""
    return _write_edition(
        Path(src_dir), Path(dest_dir), lambda nb, name: teacher_notebook(nb, Path(solutions_dir), name))


# --- grading ---------------------------------------------------------------------------------------------------

@dataclass
class SubmissionResult:
    """What grading one submitted file gave: the status of each exercise ("pass", "fail", "error",
    "unanswered", "missing": the check produced no result, "not run": execution stopped before it) and
    the problems that kept the submission from running through (a cell that raised, a timeout, not a
    notebook)."""

    student: str
    results: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        return sum(status == "pass" for status in self.results.values())


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _execute(notebook, timeout: float, kernel_name: str, cwd: Path) -> tuple[int | None, str | None]:
    """Run the notebook in place in a fresh kernel; return (index of the cell where execution stopped,
    why) or (None, None) when every cell ran. The time limit covers the cells, not the kernel's start."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    state: dict[str, Any] = {"deadline": None, "cell": None}

    def time_left(cell) -> int:
        if state["deadline"] is None:
            state["deadline"] = time.monotonic() + timeout
        state["cell"] = next(i for i, c in enumerate(notebook.cells) if c is cell)
        return max(1, math.ceil(state["deadline"] - time.monotonic()))  # 0 would mean "no limit"

    # A kernel stuck in a loop ignores a polite shutdown request: stop it at once.
    client = NotebookClient(notebook, kernel_name=kernel_name, timeout_func=time_left, allow_errors=True,
                            record_timing=False, shutdown_kernel="immediate",
                            resources={"metadata": {"path": str(cwd)}})
    try:
        # The kernel process's own stderr holds only its log (cells' output reaches the notebook).
        client.execute(stderr=subprocess.DEVNULL)
    except CellTimeoutError:
        return state["cell"], f"timed out: still running after the {timeout:g} s limit, in cell {state['cell'] + 1}"
    except DeadKernelError:
        where = f"in cell {state['cell'] + 1}" if state["cell"] is not None else "before the first cell"
        return state["cell"] or 0, f"the kernel died {where} (out of memory, or the code ended Python)"
    except Exception as err:  # no such kernel, a kernel that does not start, ...
        return -1, f"could not be run: {type(err).__name__}: {_one_line(err)}"
    return None, None


def grade_notebook(path: Path, timeout: float = 120, kernel_name: str = "python3", cwd: Path | None = None,
                   student: str | None = None):
    """Grade one submitted file; return (SubmissionResult, the executed notebook or None)."""
    import nbformat

    path = Path(path)
    result = SubmissionResult(student or path.name)
    start = time.monotonic()
    if path.suffix != ".ipynb":
        result.problems.append("not a notebook (a .ipynb file)")
        return result, None
    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception as err:  # empty, not JSON, JSON but no notebook, an unknown format version...
        result.problems.append(f"not a notebook: cannot be read as one ({type(err).__name__}: {_one_line(err, 120)})")
        return result, None
    checks = {index: cell_exercise(cell) for index, cell in enumerate(notebook.cells)
              if is_check_cell(cell) and cell_exercise(cell)}
    for index, exercise_id in checks.items():
        # As nbgrader restores its locked cells: a check cell runs the check as written in the course,
        # whatever the submission made of it.
        if GRADE_ID.match(str(_nbgrader(notebook.cells[index]).get("grade_id", ""))):
            try:
                notebook.cells[index].source = check_source(exercise_id)
            except ValueError:
                pass  # an exercise this version of the course does not know: its check will say so
    stopped_at, why = _execute(notebook, timeout, kernel_name, cwd or path.parent)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            found = result_from_output(output)
            if found and index in checks and str(found["exercise"]) == checks[index]:
                result.results.setdefault(checks[index], str(found["status"]))  # only the check cells count
            elif output.get("output_type") == "error":
                raised = f"{output.get('ename')}: {_one_line(output.get('evalue', ''))}"
                if index in checks and checks[index] not in result.results:
                    result.results[checks[index]] = "error"
                    result.problems.append(f"the check of exercise {checks[index]} (cell {index + 1}) raised {raised}")
                else:
                    result.problems.append(f"cell {index + 1} raised {raised}")
    for index, exercise_id in checks.items():
        if exercise_id not in result.results:
            stopped_before = stopped_at is not None and index >= stopped_at
            result.results[exercise_id] = "not run" if stopped_before else "missing"
    if why:
        result.problems.append(why)
    result.seconds = time.monotonic() - start
    return result, notebook


def _exercise_order(exercise_id: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in exercise_id.split("."))


def write_results_csv(results: list[SubmissionResult], out: Path) -> list[str]:
    """One row per submission: student, passed, exercises, one column per exercise, problems. Written
    atomically (a temporary file, then renamed). Returns the exercise columns."""
    exercises = sorted({ex for result in results for ex in result.results}, key=_exercise_order)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", newline="", encoding="utf-8", dir=out.parent, delete=False,
                                     prefix=f".{out.name}.", suffix=".tmp") as file:
        writer = csv.writer(file)
        writer.writerow(["student", "passed", "exercises", *exercises, "problems"])
        for result in results:
            statuses = [result.results.get(ex, "") for ex in exercises]
            writer.writerow([result.student, result.passed, len(result.results), *statuses,
                             "; ".join(result.problems)])
    os.replace(file.name, out)
    return exercises


def _submissions(folder: Path, skip: list[Path]) -> list[Path]:
    skipped = {path.resolve() for path in skip}
    files = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if not path.is_file() or any(part.startswith(".") for part in parts) or path.resolve() in skipped:
            continue  # hidden files, .ipynb_checkpoints, the results file itself
        if any(parent.resolve() in skipped for parent in path.parents):
            continue  # the executed copies, when they are written into the submissions folder
        files.append(path)
    return files


def grade_submissions(
    submissions_dir: Path | str,
    out: Path | str = "results.csv",
    timeout: float = 120,
    kernel_name: str = "python3",
    executed_dir: Path | str | None = None,
    workdir: Path | str | None = None,
    report: Callable[[str], None] = print,
) -> list[SubmissionResult]:
    """Grade every file under submissions_dir (one submission each, named by its path there), write the
    table to `out` and report a summary. A file that is no notebook, raises or runs too long gets its row
    with the reason; grading goes on with the next file. With `executed_dir`, each executed notebook is
    saved there (the students' feedback is in its outputs). `workdir` is the folder the notebooks run in
    (default: each submission's own folder)."""
    import nbformat

    folder = Path(submissions_dir)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: give the folder that holds the submitted notebooks")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    out = Path(out)
    files = _submissions(folder, [out] + ([Path(executed_dir)] if executed_dir else []))
    if not files:
        raise ValueError(f"{folder} holds no files to grade")
    results: list[SubmissionResult] = []
    start = time.monotonic()
    try:
        for path in files:
            student = path.relative_to(folder).as_posix()
            try:
                result, executed = grade_notebook(path, timeout, kernel_name, Path(workdir) if workdir else None,
                                                  student)
                if executed is not None and executed_dir is not None:
                    target = Path(executed_dir) / student
                    target.parent.mkdir(parents=True, exist_ok=True)
                    nbformat.write(executed, target)
            except Exception as err:  # whatever goes wrong with one file, the others are still graded
                result = SubmissionResult(student, problems=[f"grader error: {type(err).__name__}: {_one_line(err)}"])
            results.append(result)
            report(f"{student}: {_summary(result)} ({result.seconds:.1f} s)")
    except KeyboardInterrupt:
        if results:
            write_results_csv(results, out)
            report(f"interrupted: the {len(results)} submission(s) graded so far are in {out}")
        raise
    exercises = write_results_csv(results, out)
    report(f"graded {len(results)} submission(s) in {time.monotonic() - start:.1f} s; results in {out}")
    for exercise_id in exercises:
        passed = sum(result.results.get(exercise_id) == "pass" for result in results)
        attempted = sum(exercise_id in result.results for result in results)
        report(f"  exercise {exercise_id}: {passed} of {attempted} passed")
    return results


def _summary(result: SubmissionResult) -> str:
    text = f"{result.passed} of {len(result.results)} exercises passed" if result.results else "not graded"
    return text + (f"; {'; '.join(result.problems)}" if result.problems else "")


# --- the command line -----------------------------------------------------------------------------------------

def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def _student_edition_command(args: argparse.Namespace) -> None:
    written = student_edition(args.src, args.dest)
    print(f"wrote the student edition of {len(written)} notebook(s) to {args.dest}")


def _teacher_edition_command(args: argparse.Namespace) -> None:
    written = teacher_edition(args.src, args.dest, args.solutions)
    print(f"wrote the teacher edition of {len(written)} notebook(s), with the solutions of {args.solutions}, "
          f"to {args.dest}")


def _grade_command(args: argparse.Namespace) -> None:
    grade_submissions(args.submissions, args.out, args.timeout, args.kernel, args.executed, args.workdir)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add the student-edition, teacher-edition and grade commands to a command line's subcommands;
    `run(args)` then runs the one chosen."""
    student = commands.add_parser(
        "student-edition", help="write the notebooks for the class: solutions removed, exercise outputs cleared",
        description="Write the student edition of every notebook of SRC into DEST: the solution regions of the "
                    "answer cells (between ### BEGIN SOLUTION and ### END SOLUTION) become the stub, the outputs "
                    "of the answer and check cells are cleared, everything else is kept. DEST may not be SRC.")
    student.add_argument("src", metavar="SRC", type=Path, help="the folder of notebooks to start from")
    student.add_argument("dest", metavar="DEST", type=Path, help="the folder to write the student edition to")
    student.set_defaults(classroom_command=_student_edition_command)

    teacher = commands.add_parser(
        "teacher-edition", help="write the notebooks with the solutions in the answer cells (nbgrader style)",
        description="Write the notebooks of SRC into DEST with each answer cell's solution, from the solutions "
                    "folder, between ### BEGIN SOLUTION and ### END SOLUTION: an nbgrader source notebook "
                    "that a teacher can run, and that student-edition turns back into the class's copy.")
    teacher.add_argument("src", metavar="SRC", type=Path, help="the folder of notebooks to start from")
    teacher.add_argument("dest", metavar="DEST", type=Path, help="the folder to write the teacher edition to")
    teacher.add_argument("--solutions", type=Path, default=SOLUTIONS_DIR, metavar="DIR",
                         help="the folder of solution files ch01.py ... (default: the repository's solutions/)")
    teacher.set_defaults(classroom_command=_teacher_edition_command)

    grade = commands.add_parser(
        "grade", help="run every submitted notebook and write a table of results per student and exercise",
        description="Run each file under SUBMISSIONS in a fresh Jupyter kernel, with a time limit, and write a "
                    "CSV table: one row per file (the student), one column per exercise (pass, fail, error, "
                    "unanswered, missing, not run), and the problems (a cell that raised, a timeout, not a "
                    "notebook). A bad file gets its row; grading goes on. This runs the students' code: "
                    "grade in an account or container that holds nothing you would not let them change.")
    grade.add_argument("submissions", metavar="SUBMISSIONS", type=Path, help="the folder of submitted notebooks")
    grade.add_argument("--out", type=Path, default=Path("results.csv"), help="the CSV file (default: results.csv)")
    grade.add_argument("--timeout", type=_positive_seconds, default=120.0, metavar="SECONDS",
                       help="the time limit for running one notebook's cells (default: 120)")
    grade.add_argument("--kernel", default="python3", help="the Jupyter kernel to run them in (default: python3)")
    grade.add_argument("--executed", type=Path, metavar="DIR",
                       help="also save each executed notebook, with the checks' feedback, under DIR")
    grade.add_argument("--workdir", type=Path, metavar="DIR",
                       help="run every notebook in this folder (default: each submission's own folder)")
    grade.set_defaults(classroom_command=_grade_command)


def run(args: argparse.Namespace) -> int:
    """Run the classroom command parsed into `args` (by a parser that `add_commands` extended); return
    the exit status: 0, 1 after an error (printed as one line), 130 when interrupted."""
    try:
        args.classroom_command(args)
    except (ValueError, OSError) as err:
        print(f"{PROG}: error: {_one_line(err, 1000)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0
