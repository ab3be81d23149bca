"""The teacher's commands: the student and teacher editions (in process, on small synthetic notebooks) and
grading a folder of submissions (one run of real kernels, the only slow test here)."""

import csv
from pathlib import Path

import nbformat
import pytest

from llm_course import exercise_cells, exercise_ids, get_exercise, run_check, student_notebook, teacher_notebook
from llm_course.classroom import BEGIN, END, solution_body
from llm_course.cli import main

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def notebook(cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.cells = cells
    return nb


def lesson_with(*exercise_ids_):
    """A small course notebook: a lesson cell with an output, then the exercises' cells with the outputs
    that running the stubs left (as stored in the course's notebooks)."""
    intro = nbformat.v4.new_code_cell("print(1 + 1)", execution_count=1,
                                      outputs=[nbformat.v4.new_output("stream", name="stdout", text="2\n")])
    cells = [nbformat.v4.new_markdown_cell("# A lesson"), intro]
    for ex_id in exercise_ids_:
        task, answer, check = exercise_cells(ex_id)
        check.execution_count = 2
        check.outputs = [nbformat.v4.new_output("display_data", data={"text/plain": "not answered yet"})]
        cells += [task, answer, check]
    return notebook(cells)


def answer_cells(nb):
    return [cell for cell in nb.cells if cell.metadata.get("nbgrader", {}).get("solution")]


def test_teacher_edition_holds_every_solution_and_each_runs_on_its_own():
    teacher = teacher_notebook(lesson_with(*exercise_ids()))
    for ex_id, cell in zip(exercise_ids(), answer_cells(teacher)):
        ex = get_exercise(ex_id)
        assert BEGIN in cell.source and END in cell.source and "NotImplementedError" not in cell.source
        assert all(line.strip() in cell.source for line in solution_body(ex_id).splitlines())
        namespace: dict = {}
        exec(cell.source, namespace)  # only the answer cell's own imports: a fresh namespace
        assert run_check(ex_id, namespace[ex.function]).status == "pass", ex_id


def test_student_edition_strips_solutions_and_clears_exercise_outputs():
    original = lesson_with("4.2", "7.4")
    student = student_notebook(teacher_notebook(original))
    for before, after in zip(original.cells, student.cells):
        if before.metadata.get("nbgrader"):
            assert after.source == before.source  # the stub again, exactly
            assert after.get("outputs", []) == [] and after.get("execution_count") is None
        else:
            assert after == before  # lesson cells keep their source and outputs
    assert not [cell for cell in student.cells if "SOLUTION" in cell.source]
    assert original.cells[4].outputs  # the input notebook is left as it was


def test_student_edition_agrees_with_nbgrader():
    clear_solutions = pytest.importorskip("nbgrader.preprocessors").ClearSolutions
    teacher = teacher_notebook(lesson_with("2.1", "5.3", "8.2"))
    ours = student_notebook(teacher)
    theirs, _ = clear_solutions().preprocess(nbformat.from_dict(teacher), {})
    assert [cell.source for cell in ours.cells] == [cell.source for cell in theirs.cells]


def test_student_edition_keeps_solutions_out_of_other_cells():
    leaky = lesson_with("3.4")
    leaky.cells[1].source = "x = 1\n### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION"
    with pytest.raises(ValueError, match="cell 2: a solution region in a cell that is not an answer cell"):
        student_notebook(leaky, name="leaky.ipynb")
    unclosed = teacher_notebook(lesson_with("3.4"))
    answer = answer_cells(unclosed)[0]
    answer.source = answer.source.replace(END, "")
    with pytest.raises(ValueError, match="cell 4: a BEGIN SOLUTION line without its END SOLUTION line"):
        student_notebook(unclosed)


def test_edition_commands_write_a_folder_and_refuse_to_overwrite_it(tmp_path, capsys):
    src, teacher, student = tmp_path / "course", tmp_path / "teacher", tmp_path / "class"
    src.mkdir()
    nbformat.write(lesson_with("1.1", "6.3"), src / "01_lesson.ipynb")
    assert main(["teacher-edition", str(src), str(teacher)]) == 0
    assert main(["student-edition", str(teacher), str(student)]) == 0
    assert "wrote the student edition of 1 notebook(s)" in capsys.readouterr().out
    written = nbformat.read(student / "01_lesson.ipynb", as_version=4)
    assert [c.source for c in written.cells] == [c.source for c in lesson_with("1.1", "6.3").cells]
    assert BEGIN in nbformat.read(teacher / "01_lesson.ipynb", as_version=4).cells[3].source

    before = (teacher / "01_lesson.ipynb").read_bytes()
    assert main(["student-edition", str(teacher), str(teacher / ".." / "teacher")]) == 1
    assert "is the source folder" in capsys.readouterr().err
    assert (teacher / "01_lesson.ipynb").read_bytes() == before
    assert main(["teacher-edition", str(src), str(teacher), "--solutions", str(tmp_path / "none")]) == 1
    assert "no solutions file" in capsys.readouterr().err
    (src / "broken.ipynb").write_text("{not json")
    assert main(["student-edition", str(src), str(tmp_path / "other")]) == 1
    assert "broken.ipynb cannot be read as a notebook" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()  # nothing half written


def test_grading_a_folder_gives_every_file_its_row(tmp_path, capsys):
    submissions = tmp_path / "submissions"
    (submissions / "group-b").mkdir(parents=True)
    body = "\n".join("    " + line for line in solution_body("7.4").splitlines())

    def submission(answer_source=None, first=None, check_source=None):
        task, answer, check = exercise_cells("7.4")
        if answer_source is not None:
            answer.source = answer_source
        if check_source is not None:
            check.source = check_source
        return notebook(([nbformat.v4.new_code_cell(first)] if first else []) + [task, answer, check])

    stub = get_exercise("7.4").stub
    solved = stub.replace("    # YOUR CODE HERE\n    raise NotImplementedError()", body)
    nbformat.write(submission(solved), submissions / "good.ipynb")
    wrong = stub.replace("    # YOUR CODE HERE\n    raise NotImplementedError()", "    return text.lower()")
    # The check cell edited away: grading runs the course's check all the same.
    nbformat.write(submission(wrong, check_source="print('all good')"), submissions / "group-b" / "wrong.ipynb")
    nbformat.write(submission("raise RuntimeError('I give up')"), submissions / "raises.ipynb")
    nbformat.write(submission(first="while True:\n    pass"), submissions / "loops.ipynb")
    (submissions / "notes.txt").write_text("my answers are in my head")
    # A previous run's results and executed copies in the same folder are no submissions.
    out, executed_dir = submissions / "results.csv", submissions / "executed"
    out.write_text("student,passed\n")
    (executed_dir / "group-b").mkdir(parents=True)
    nbformat.write(submission(), executed_dir / "group-b" / "wrong.ipynb")

    assert main(["grade", str(submissions), "--out", str(out), "--timeout", "10", "--executed", str(executed_dir)]) == 0
    rows = {row["student"]: row for row in csv.DictReader(out.open())}
    assert list(rows) == ["good.ipynb", "group-b/wrong.ipynb", "loops.ipynb", "notes.txt", "raises.ipynb"]
    good = rows["good.ipynb"]
    assert (good["7.4"], good["passed"], good["exercises"], good["problems"]) == ("pass", "1", "1", "")
    assert rows["group-b/wrong.ipynb"]["7.4"] == "fail"
    assert rows["raises.ipynb"]["7.4"] == "error"
    assert "cell 2 raised RuntimeError: I give up" in rows["raises.ipynb"]["problems"]
    assert "NameError: name 'clean_answer' is not defined" in rows["raises.ipynb"]["problems"]
    assert rows["loops.ipynb"]["7.4"] == "not run"
    assert "timed out: still running after the 10 s limit, in cell 1" in rows["loops.ipynb"]["problems"]
    assert (rows["notes.txt"]["7.4"], rows["notes.txt"]["problems"]) == ("", "not a notebook (a .ipynb file)")
    printed = capsys.readouterr().out
    assert "graded 5 submission(s)" in printed and "exercise 7.4: 1 of 4 passed" in printed
    # The executed copy holds the learner's feedback.
    executed = nbformat.read(executed_dir / "group-b" / "wrong.ipynb", as_version=4)
    assert "check 2 of 8 (an article and a full stop) failed" in executed.cells[2].outputs[0]["data"]["text/plain"]


def test_grading_refuses_what_it_cannot_grade(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "missing")]) == 1
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["grade", str(tmp_path), "--timeout", "0"])
    assert "expected a positive number of seconds, got 0" in capsys.readouterr().err
    assert main(["grade", str(tmp_path), "--out", str(tmp_path / "results.csv")]) == 1
    assert "holds no files to grade" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb")),
                         ids=lambda path: path.name)
def test_the_course_notebooks_make_both_editions(path):
    # Their answer cells hold the stubs (teacher_notebook finds the stub lines and a solution for each),
    # and the student edition of the teacher edition is the course notebook without exercise outputs.
    course = nbformat.read(path, as_version=4)
    student = student_notebook(teacher_notebook(course, name=path.name), name=path.name)
    for before, after in zip(course.cells, student.cells, strict=True):
        if before.metadata.get("nbgrader"):
            assert after.source == before.source and not after.get("outputs")
        else:
            assert after == before


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb")),
                         ids=lambda path: path.name)
def test_each_notebook_holds_its_chapters_exercises_as_stubs_with_their_checks(path):
    from llm_course.classroom import cell_exercise, is_answer_cell, is_check_cell

    chapter = int(path.name[:2])
    cells = nbformat.read(path, as_version=4).cells
    answers = [cell_exercise(cell) for cell in cells if is_answer_cell(cell)]
    checks = [cell_exercise(cell) for cell in cells if is_check_cell(cell)]
    assert answers == checks == exercise_ids(chapter) and len(answers) >= 3
    for cell in cells:
        if is_answer_cell(cell):
            assert "raise NotImplementedError()" in cell.source and "# YOUR CODE HERE" in cell.source
        if is_check_cell(cell):  # run in the stored notebook: it reports the stub as unanswered, never an error
            assert cell.execution_count is not None and cell.outputs
            assert all(output.output_type != "error" for output in cell.outputs)
