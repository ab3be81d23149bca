"""Chapter 1: exercises with instant feedback: `check_exercise("4.2", top_k_probs)` in a notebook.

Each exercise is a function the learner writes in an answer cell (a stub that raises NotImplementedError
until it is filled in). The check runs it on a few seeded inputs, from a simple one to edge cases,
compares each result with the reference behaviour (the package's own functions where they exist, torch
otherwise) and says "passed", or exactly what is wrong: the input it failed on, and what was expected
against what came back. It never shows the reference's code.

The exercises themselves live in `llm_course/exercise_bank/` (one file per chapter), their solutions
apart, in the repository's `solutions/` folder. The cells follow nbgrader's conventions (see
`exercise_cells`), and a check also displays its result as JSON under the MIME type `CHECK_MIME`, which
`llm-course grade` reads from the executed notebooks.
"""

from __future__ import annotations

import ast
import copy
import json
import math
import os
import sys
import traceback
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable

import torch
from torch import nn

__all__ = [
    "CHECK_MIME",
    "STRICT_CHECKS_ENV",
    "CheckResult",
    "Exercise",
    "ExerciseCase",
    "ExerciseFailed",
    "check_exercise",
    "get_exercise",
    "exercise_case",
    "exercise_cells",
    "exercise_ids",
    "run_check",
]

CHAPTER = 1

# A display with this MIME type carries a check's result as JSON; Jupyter frontends ignore it and show
# the text/plain message next to it.
CHECK_MIME = "application/vnd.llm-course.check+json"
# Set to 1 to make a failed check raise ExerciseFailed (nbgrader's autograder counts errors, not messages).
STRICT_CHECKS_ENV = "LLM_COURSE_STRICT_CHECKS"
STUB_LINES = ("# YOUR CODE HERE", "raise NotImplementedError()")  # nbgrader's stub for Python
SHOWN_INPUT_VALUES = 12  # inputs up to this many elements are shown in full in the feedback (else by shape)
SHOWN_RESULT_VALUES = 24  # and expected/got results up to this many


@dataclass(frozen=True)
class ExerciseCase:
    """One input an exercise is checked on: `args` are passed positionally; `label` says what the case
    probes ("k larger than the vocabulary"); `shown` replaces the automatic description of the inputs."""

    label: str
    args: tuple
    shown: str | None = None


def call_with(function: Callable, args: tuple) -> Any:
    return function(*args)


@dataclass(frozen=True)
class Exercise:
    """An exercise: the function `function` the learner writes, from the answer cell `stub`.

    `reference` behaves as a correct answer; `cases()` builds the inputs (seeded, so every run sees the
    same ones); `run(function, args)` returns what is compared (by default the function's result).
    `returns` names the elements of a tuple result for the feedback, e.g. ("context", "weights").
    """

    id: str
    title: str
    function: str
    task: str
    stub: str
    reference: Callable[..., Any]
    cases: Callable[[], list[ExerciseCase]]
    run: Callable[[Callable, tuple], Any] = call_with
    returns: tuple[str, ...] = ()
    rtol: float = 1e-4
    atol: float = 1e-5

    @property
    def chapter(self) -> int:
        return int(self.id.split(".")[0])

    @property
    def parameters(self) -> list[str]:
        """The parameter names of the function in the stub."""
        for node in ast.parse(self.stub).body:
            if isinstance(node, ast.FunctionDef) and node.name == self.function:
                return [arg.arg for arg in node.args.args]
        raise ValueError(f"exercise {self.id}: its stub does not define {self.function}")


@dataclass(frozen=True)
class CheckResult:
    """The outcome of checking one exercise: status is "pass", "fail" (a wrong result), "error" (the
    function raised) or "unanswered" (it still raises NotImplementedError)."""

    exercise: str
    status: str
    message: str
    passed: int  # cases passed before the first failure
    total: int

    @property
    def ok(self) -> bool:
        return self.status == "pass"

    def to_json(self) -> dict[str, Any]:
        return {"exercise": self.exercise, "status": self.status, "passed": self.passed, "total": self.total,
                "message": self.message}


class ExerciseFailed(AssertionError):
    """Raised by check_exercise in strict mode (see STRICT_CHECKS_ENV) when a check does not pass."""


@cache
def _registry() -> dict[str, Exercise]:
    from .exercise_bank import EXERCISES  # imported on first use: `import llm_course` stays light

    return {ex.id: ex for ex in EXERCISES}


def exercise_ids(chapter: int | None = None) -> list[str]:
    """The ids of all exercises ("1.1", "1.2", ...), in order, or only those of one chapter."""
    return [ex_id for ex_id, ex in _registry().items() if chapter is None or ex.chapter == chapter]


def get_exercise(exercise_id: str) -> Exercise:
    """The exercise with this id, e.g. get_exercise("4.2")."""
    registry = _registry()
    if exercise_id not in registry:
        quoted = "" if isinstance(exercise_id, str) else ' (give the id as a string, e.g. "4.2")'
        raise ValueError(f"there is no exercise {exercise_id!r}{quoted}; the exercises are {', '.join(registry)}")
    return registry[exercise_id]


def exercise_case(exercise_id: str, number: int) -> tuple:
    """The inputs of case `number` (1-based, as the feedback counts) of an exercise, to try by hand:
    `args = exercise_case("4.2", 3)`, then `top_k_probs(*args)`."""
    cases = _cases(get_exercise(exercise_id))
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= len(cases):
        raise ValueError(f"exercise {exercise_id} has cases 1 to {len(cases)}, got {number!r}")
    return copy.deepcopy(cases[number - 1].args)


def _cases(ex: Exercise) -> list[ExerciseCase]:
    with torch.random.fork_rng(devices=[]):  # building inputs (modules included) leaves the caller's RNG alone
        torch.manual_seed(0)
        return ex.cases()


# --- describing values in the feedback ---------------------------------------------------------------

def _number(value: float | int | bool) -> str:
    if isinstance(value, int):  # bool included
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    text = f"{value:.4g}"
    return text if any(c in text for c in ".en") else text + ".0"


def _tensor_values(tensor: torch.Tensor) -> str:
    def nested(values) -> str:
        if isinstance(values, list):
            return "[" + ", ".join(nested(v) for v in values) + "]"
        return _number(values)

    dtype = "" if tensor.dtype in (torch.float32, torch.int64, torch.bool) else f", dtype={tensor.dtype}"
    return f"tensor({nested(tensor.detach().cpu().tolist())}{dtype})"


def _precise(value: float | int) -> str:
    text = f"{value:.8g}"
    return text if isinstance(value, int) or any(c in text for c in ".en") else text + ".0"


def describe(value: Any, limit: int = SHOWN_INPUT_VALUES) -> str:
    """A short description of a value: small tensors and containers in full, large ones by shape."""
    if isinstance(value, torch.Tensor):
        if value.numel() <= limit:
            return _tensor_values(value)
        return f"<{str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}>"
    if isinstance(value, nn.Module):
        text = repr(value)
        return text if "\n" not in text else f"<{type(value).__name__} module>"
    if isinstance(value, (list, tuple)):
        scalars = all(isinstance(v, (int, float, str)) for v in value)
        if len(value) > (limit * 2 if scalars else 6):
            return f"<{type(value).__name__} of {len(value)} items>"
        inner = ", ".join(describe(v, limit) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        if len(value) > 8:
            return f"<dict of {len(value)} items>"
        return "{" + ", ".join(f"{k!r}: {describe(v, limit)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return _number(value)
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__} ({describe(value)})"


# --- comparing a result with the expected one ---------------------------------------------------------

def _compare_tensors(expected: torch.Tensor, got: Any, where: str, rtol: float, atol: float) -> str | None:
    dtype = str(expected.dtype).removeprefix("torch.")
    if not isinstance(got, torch.Tensor):
        return f"{where} should be a {dtype} tensor of shape {tuple(expected.shape)}, but it is {_kind(got)}"
    if got.shape != expected.shape:
        return f"{where} has shape {tuple(got.shape)}; expected shape {tuple(expected.shape)}"
    if got.dtype != expected.dtype:
        return f"{where} has dtype {got.dtype}; expected {expected.dtype}"
    got = got.detach().cpu()
    if expected.is_floating_point():
        # isclose treats equal infinities as close, so -inf where a token is masked compares exactly.
        wrong = ~torch.isclose(got, expected, rtol=rtol, atol=atol)
    else:
        wrong = got != expected
    if not wrong.any():
        return None
    first = tuple(wrong.nonzero()[0].tolist())
    message = (
        f"{where} has the right shape and dtype, but {int(wrong.sum())} of {wrong.numel()} values differ; "
        f"the first at index {first}: expected {_number(expected[first].item())}, got {_number(got[first].item())}"
    )
    if expected.numel() <= SHOWN_RESULT_VALUES:
        message += f"\n  expected: {_tensor_values(expected)}\n  got:      {_tensor_values(got)}"
    return message


def _as_scalar(got: Any, kinds: tuple[type, ...]) -> Any:
    """A Python number from a number or a one-element tensor (`.item()`), or None when it is neither."""
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if hasattr(got, "item") and not isinstance(got, torch.Tensor):  # a numpy scalar
        got = got.item()
    return got if isinstance(got, kinds) else None


def compare(expected: Any, got: Any, where: str = "the result", rtol: float = 1e-4, atol: float = 1e-5) -> str | None:
    """None when `got` matches `expected`, otherwise a sentence saying how it differs."""
    if isinstance(expected, torch.Tensor):
        return _compare_tensors(expected, got, where, rtol, atol)
    if isinstance(expected, bool):
        value = _as_scalar(got, (bool,))
        if value is None:
            return f"{where} should be True or False, but it is {_kind(got)}"
        return None if value == expected else f"{where} is {value}; expected {expected}"
    if isinstance(expected, float):
        value = _as_scalar(got, (int, float))
        if value is None or isinstance(value, bool):
            return f"{where} should be a number (a float), but it is {_kind(got)}"
        if value == expected or math.isclose(value, expected, rel_tol=rtol, abs_tol=atol):
            return None
        return f"{where} is {_precise(value)}; expected {_precise(float(expected))}"
    if isinstance(expected, int):
        value = _as_scalar(got, (int,))
        if value is None or isinstance(value, bool):
            return f"{where} should be an integer, but it is {_kind(got)}"
        return None if value == expected else f"{where} is {value:,}; expected {expected:,}"
    if isinstance(expected, str):
        if not isinstance(got, str):
            return f"{where} should be a string, but it is {_kind(got)}"
        return None if got == expected else f"{where} is {got!r}; expected {expected!r}"
    if isinstance(expected, (list, tuple)):
        kind = "a list" if isinstance(expected, list) else "a tuple"
        if not isinstance(got, (list, tuple)):
            return f"{where} should be {kind} of {len(expected)} items, but it is {_kind(got)}"
        if len(got) != len(expected):
            shown = SHOWN_RESULT_VALUES
            return (f"{where} has {len(got)} items; expected {len(expected)}\n"
                    f"  expected: {describe(expected, shown)}\n  got:      {describe(got, shown)}")
        for index, (e, g) in enumerate(zip(expected, got)):
            problem = compare(e, g, f"item {index} of {where}", rtol, atol)
            if problem:
                return problem
        return None
    if isinstance(expected, dict):  # its keys name the parts of a result, e.g. "the gradient of weight"
        for key, e in expected.items():
            problem = compare(e, got.get(key) if isinstance(got, dict) else None, key, rtol, atol)
            if problem:
                return problem
        return None
    raise TypeError(f"cannot compare results of type {type(expected).__name__}")


# --- running a check -------------------------------------------------------------------------------------

def _call_description(ex: Exercise, case: ExerciseCase) -> str:
    if case.shown is not None:
        return f"{ex.function}({case.shown})"
    names = ex.parameters
    parts = [f"{name}={describe(value)}" for name, value in zip(names, case.args)]
    return f"{ex.function}({', '.join(parts)})"


def _raised(err: BaseException, candidate: Callable) -> str:
    """"TypeError: ..." plus the line of the learner's function that raised, without the traceback."""
    text = " ".join(f"{type(err).__name__}: {err}".split())
    text = text if len(text) <= 400 else text[:397] + "..."
    code = getattr(candidate, "__code__", None)
    lines = [line for frame, line in traceback.walk_tb(err.__traceback__) if frame.f_code is code]
    if lines:
        text += f" (at line {lines[-1] - code.co_firstlineno + 1} of {candidate.__name__})"
    return text


def run_check(exercise_id: str, candidate: Any) -> CheckResult:
    """Check `candidate` against exercise `exercise_id` and return the result, without displaying it.

    The cases run in order and the first failure stops the check. The caller's random state is left as
    it was, so checking an exercise does not change the rest of a notebook's outputs.
    """
    ex = get_exercise(exercise_id)
    header = f"Exercise {ex.id} ({ex.title})"
    if not callable(candidate):
        message = (f"{header}: check_exercise needs the function you wrote, e.g. "
                   f'check_exercise("{ex.id}", {ex.function}), but got {_kind(candidate)}.')
        return CheckResult(ex.id, "error", message, 0, 0)
    with torch.random.fork_rng(devices=[]):
        cases = _cases(ex)
        for number, case in enumerate(cases, 1):
            where = f"check {number} of {len(cases)} ({case.label})"
            call = _call_description(ex, case)
            expected = ex.run(ex.reference, copy.deepcopy(case.args))
            try:
                got = ex.run(candidate, copy.deepcopy(case.args))
            except NotImplementedError:
                message = (f"{header}: not answered yet: {ex.function} still raises NotImplementedError. "
                           "Replace `raise NotImplementedError()` with your code, run that cell, then this one.")
                return CheckResult(ex.id, "unanswered", message, number - 1, len(cases))
            except Exception as err:  # the learner's code may raise anything; report it, do not crash
                raised = _raised(err, candidate)
                message = f"{header}: {where} raised an error.\n  input: {call}\n  error: {raised}"
                return CheckResult(ex.id, "error", message, number - 1, len(cases))
            problem = _problem(ex, expected, got)
            if problem:
                hint = f'Try it yourself: args = exercise_case("{ex.id}", {number}); {ex.function}(*args)'
                message = f"{header}: {where} failed.\n  input: {call}\n  {problem}\n{hint}"
                return CheckResult(ex.id, "fail", message, number - 1, len(cases))
    return CheckResult(ex.id, "pass", f"{header}: passed all {len(cases)} checks.", len(cases), len(cases))


def _problem(ex: Exercise, expected: Any, got: Any) -> str | None:
    if ex.returns:
        if not isinstance(got, (tuple, list)) or len(got) != len(ex.returns):
            names = ", ".join(ex.returns)
            return f"the result should be a tuple ({names}), but it is {_kind(got)}"
        for name, e, g in zip(ex.returns, expected, got):
            problem = compare(e, g, name, ex.rtol, ex.atol)
            if problem:
                return problem
        return None
    return compare(expected, got, "the result", ex.rtol, ex.atol)


def check_exercise(exercise_id: str, candidate: Any) -> None:
    """Check the function you wrote for exercise `exercise_id` and show what is right or wrong.

    In a notebook the result is displayed (text, and JSON for `llm-course grade`); elsewhere it is printed.
    With the environment variable LLM_COURSE_STRICT_CHECKS=1, a check that does not pass also raises
    ExerciseFailed, as graders such as nbgrader's expect.
    """
    result = run_check(exercise_id, candidate)
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None:
        from IPython.display import display

        display({"text/plain": result.message, CHECK_MIME: result.to_json()}, raw=True)
    else:
        print(result.message)
    if not result.ok and os.environ.get(STRICT_CHECKS_ENV, "").lower() in ("1", "true", "yes"):
        raise ExerciseFailed(result.message)


# --- the exercise's cells, nbgrader style -----------------------------------------------------------------

def _nbgrader(grade_id: str, *, solution: bool, grade: bool) -> dict[str, Any]:
    metadata = {"grade": grade, "grade_id": grade_id, "locked": grade, "schema_version": 3,
                "solution": solution, "task": False}
    if grade:
        metadata["points"] = 1
    return metadata


def answer_grade_id(exercise_id: str) -> str:
    return "answer-" + exercise_id.replace(".", "-")


def check_grade_id(exercise_id: str) -> str:
    return "check-" + exercise_id.replace(".", "-")


def check_source(exercise_id: str) -> str:
    """The source of an exercise's check cell."""
    return f'from llm_course import check_exercise\n\ncheck_exercise("{exercise_id}", {get_exercise(exercise_id).function})'


def exercise_cells(exercise_id: str) -> list:
    """The three notebook cells of an exercise (nbformat cells): the task (markdown), the answer cell
    (nbgrader solution cell, holding the stub) and the check cell (nbgrader grade cell, read-only)."""
    import nbformat

    ex = get_exercise(exercise_id)
    task = nbformat.v4.new_markdown_cell(f"### Exercise {ex.id}: {ex.title}\n\n{ex.task}")
    answer = nbformat.v4.new_code_cell(ex.stub, metadata={
        "nbgrader": _nbgrader(answer_grade_id(ex.id), solution=True, grade=False)})
    check = nbformat.v4.new_code_cell(
        check_source(ex.id),
        metadata={"deletable": False, "editable": False,
                  "nbgrader": _nbgrader(check_grade_id(ex.id), solution=False, grade=True)},
    )
    return [task, answer, check]


def result_from_output(output: dict[str, Any]) -> dict[str, Any] | None:
    """The check result a notebook output carries (see CHECK_MIME), or None."""
    data = output.get("data", {}) if output.get("output_type") in ("display_data", "execute_result") else {}
    result = data.get(CHECK_MIME)
    if isinstance(result, str):  # some writers store JSON MIME data as a string
        try:
            result = json.loads(result)
        except ValueError:
            return None
    return result if isinstance(result, dict) and "exercise" in result and "status" in result else None
