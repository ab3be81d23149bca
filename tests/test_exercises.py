"""The exercises: every check passes on its solution (solutions/), fails on the unfilled stub and on a
plausible wrong answer, with feedback that names the failing input and never shows the reference's code."""

import ast
import importlib.util
import inspect
from pathlib import Path

import pytest
import torch

import exercise_wrong_answers as wrong
import llm_course
from llm_course import (
    GPTDataset,
    ExerciseFailed,
    check_exercise,
    exercise_case,
    exercise_cells,
    exercise_ids,
    get_exercise,
    run_check,
)
from llm_course.exercise_bank.inputs import randn
from llm_course.exercises import STUB_LINES, compare

SOLUTIONS = Path(__file__).parent.parent / "solutions"
IDS = exercise_ids()


def solution_module(chapter: int):
    path = SOLUTIONS / f"ch{chapter:02d}.py"
    spec = importlib.util.spec_from_file_location(f"solutions_ch{chapter:02d}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def solution(exercise_id: str):
    ex = get_exercise(exercise_id)
    return getattr(solution_module(ex.chapter), ex.function)


def stub_function(exercise_id: str):
    ex = get_exercise(exercise_id)
    namespace: dict = {}
    exec(ex.stub, namespace)  # the answer cell as the learner first runs it
    return namespace[ex.function]


def function_node(source: str, name: str) -> ast.FunctionDef:
    return next(node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef) and node.name == name)


def test_at_least_three_exercises_per_chapter():
    for chapter in range(1, 9):
        assert len(exercise_ids(chapter)) >= 3, chapter
    assert IDS == sorted(IDS, key=lambda ex_id: tuple(map(int, ex_id.split("."))))
    assert len(set(IDS)) == len(IDS)


@pytest.mark.parametrize("exercise_id", IDS)
def test_the_solution_passes(exercise_id):
    result = run_check(exercise_id, solution(exercise_id))
    assert result.status == "pass", result.message
    assert result.passed == result.total >= 4
    assert "passed all" in result.message


@pytest.mark.parametrize("exercise_id", IDS)
def test_the_unfilled_stub_is_unanswered(exercise_id):
    result = run_check(exercise_id, stub_function(exercise_id))
    assert result.status == "unanswered"
    assert "NotImplementedError" in result.message and get_exercise(exercise_id).function in result.message


@pytest.mark.parametrize("exercise_id", IDS)
def test_a_wrong_answer_fails_and_names_the_input(exercise_id):
    ex = get_exercise(exercise_id)
    result = run_check(exercise_id, getattr(wrong, ex.function))
    assert result.status in ("fail", "error"), result.message
    label = wrong.CAUGHT_BY[exercise_id]
    assert f"({label})" in result.message, result.message  # the check that caught it...
    assert f"\n  input: {ex.function}(" in result.message  # ...and the input it failed on
    assert "Traceback" not in result.message
    if result.status == "fail":
        assert 'exercise_case("' in result.message
    # The reference's code is never shown: no line of it appears in the feedback.
    reference_lines = [line.strip() for line in inspect.getsource(ex.reference).splitlines()[1:]]
    assert not [line for line in reference_lines if len(line) > 12 and line in result.message]


@pytest.mark.parametrize("exercise_id", IDS)
def test_stub_and_solution_agree(exercise_id):
    ex = get_exercise(exercise_id)
    stub = function_node(ex.stub, ex.function)
    solved = function_node((SOLUTIONS / f"ch{ex.chapter:02d}.py").read_text(), ex.function)
    assert ast.dump(stub.args) == ast.dump(solved.args)  # same parameters, annotations and defaults
    assert ast.dump(stub.returns) == ast.dump(solved.returns)
    assert ast.get_docstring(stub) == ast.get_docstring(solved)
    lines = [line.strip() for line in ex.stub.splitlines()]
    assert [i for i in range(len(lines) - 1) if tuple(lines[i : i + 2]) == STUB_LINES] != []
    assert ex.parameters == [arg.arg for arg in stub.args.args]
    assert f"`{ex.function}(" in ex.task  # the task names the function to write


def test_learners_function_names_are_free_in_the_package():
    # The notebooks' unmarked cells may not define a public name of the package (test_notebook_drift).
    names = [get_exercise(ex_id).function for ex_id in IDS]
    assert len(set(names)) == len(names)
    assert not set(names) & set(llm_course.__all__)


def test_checks_are_deterministic_and_leave_the_random_state_alone():
    torch.manual_seed(7)
    before = torch.get_rng_state()

    def uses_randomness(scores, mask):
        torch.rand(100)  # a learner's code may draw random numbers
        return wrong.masked_softmax(scores, mask)

    first = run_check("2.1", uses_randomness)
    assert torch.equal(torch.get_rng_state(), before)
    assert run_check("2.1", uses_randomness).message == first.message
    args, again = exercise_case("5.3", 2), exercise_case("5.3", 2)
    assert torch.equal(args[0].weight, again[0].weight) and torch.equal(args[1][0][0], again[1][0][0])
    assert torch.equal(torch.get_rng_state(), before)


def test_seeded_inputs_are_what_manual_seed_draws():
    torch.manual_seed(3)
    assert torch.equal(randn(3, 2, 5), torch.randn(2, 5))


def test_exercise_case_gives_the_failing_input():
    args = exercise_case("4.2", 1)
    assert torch.equal(args[0], torch.tensor([[2.0, 1.0, 0.5, -1.0, 3.0]])) and args[1] == 2
    args[0].zero_()  # a copy: changing it changes nothing for the next call
    assert exercise_case("4.2", 1)[0].abs().sum() > 0
    with pytest.raises(ValueError, match="cases 1 to 5"):
        exercise_case("4.2", 6)
    with pytest.raises(ValueError, match="there is no exercise '9.9'; the exercises are 1.1, 1.2"):
        run_check("9.9", len)


def test_feedback_on_errors_says_what_was_raised_and_where():
    def raises(logits, k):
        values = logits.sort().values
        return values[k + 100]  # an IndexError on the second line of the function

    result = run_check("4.2", raises)
    assert result.status == "error"
    assert "IndexError: index 102 is out of bounds" in result.message
    assert "(at line 3 of raises)" in result.message
    assert "top_k_probs(logits=tensor([[2.0, 1.0, 0.5, -1.0, 3.0]]), k=2)" in result.message

    not_callable = run_check("4.2", 42)
    assert not_callable.status == "error" and 'check_exercise("4.2", top_k_probs)' in not_callable.message
    wrong_arity = run_check("4.2", lambda logits: logits)
    assert wrong_arity.status == "error" and "TypeError" in wrong_arity.message
    returns_none = run_check("4.2", lambda logits, k: None)
    assert "the result should be a float32 tensor of shape (1, 5), but it is None" in returns_none.message


def test_compare_checks_type_shape_dtype_and_values():
    expected = torch.tensor([[0.5, float("-inf")]])
    assert compare(expected, expected.clone()) is None  # equal infinities are equal
    assert "has shape (2,); expected shape (1, 2)" in compare(expected, expected[0])
    assert "has dtype torch.float64; expected torch.float32" in compare(expected, expected.double())
    values = compare(expected, torch.tensor([[0.5, 0.0]]))
    assert "1 of 2 values differ; the first at index (0, 1): expected -inf, got 0.0" in values
    assert compare(2.5, torch.tensor(2.50001)) is None  # a one-element tensor counts as a number
    assert "should be a number" in compare(2.5, "2.5")
    assert "should be an integer" in compare(3, True)
    assert "has 1 items; expected 2" in compare([1, 2], [1])
    assert compare("paris", "paris") is None and "is 'Paris'; expected 'paris'" in compare("paris", "Paris")


def test_check_exercise_prints_and_raises_only_in_strict_mode(capsys, monkeypatch):
    monkeypatch.delenv("LLM_COURSE_STRICT_CHECKS", raising=False)
    assert check_exercise("7.4", wrong.clean_answer) is None
    assert "check 1 of 8 (one word) failed" in capsys.readouterr().out
    monkeypatch.setenv("LLM_COURSE_STRICT_CHECKS", "1")
    with pytest.raises(ExerciseFailed, match="one word"):
        check_exercise("7.4", wrong.clean_answer)
    check_exercise("7.4", solution("7.4"))  # a pass never raises
    assert "passed all 8 checks" in capsys.readouterr().out


def test_cells_follow_nbgrader_conventions():
    task, answer, check = exercise_cells("4.2")
    assert task.cell_type == "markdown" and task.source.startswith("### Exercise 4.2: Top-k sampling")
    assert answer.source == get_exercise("4.2").stub
    assert answer.metadata["nbgrader"] == {"grade": False, "grade_id": "answer-4-2", "locked": False,
                                           "schema_version": 3, "solution": True, "task": False}
    assert check.metadata["nbgrader"] == {"grade": True, "grade_id": "check-4-2", "locked": True, "points": 1,
                                          "schema_version": 3, "solution": False, "task": False}
    assert check.source.endswith('check_exercise("4.2", top_k_probs)')


def test_nbgrader_accepts_the_cells():
    nbformat = pytest.importorskip("nbformat")
    validator = pytest.importorskip("nbgrader.nbgraderformat").MetadataValidator
    utils = pytest.importorskip("nbgrader.utils")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [cell for ex_id in IDS for cell in exercise_cells(ex_id)]
    validator().validate_nb(notebook)  # raises on unknown keys, missing points, duplicate grade ids...
    assert sum(map(utils.is_solution, notebook.cells)) == sum(map(utils.is_grade, notebook.cells)) == len(IDS)
    assert all(utils.is_locked(cell) for cell in notebook.cells if utils.is_grade(cell))


def test_the_sliding_windows_reference_is_gpt_dataset():
    ex = get_exercise("1.2")
    for case in ex.cases():
        token_ids, max_length, stride = case.args
        dataset = GPTDataset(token_ids, max_length, stride)
        inputs, targets = ex.reference(*case.args)
        assert len(dataset) == len(inputs)
        for (x, y), window_x, window_y in zip(dataset, inputs, targets):
            assert torch.equal(x, window_x) and torch.equal(y, window_y)
