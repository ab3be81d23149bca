"""The course's exercises, one module per chapter; each module's EXERCISES lists its exercises in order.

Each exercise's stub is what the learner's answer cell starts as; its solution lives apart, in the
repository's `solutions/chNN.py`, and its reference behaviour here comes from the package's own functions
where they exist, from torch otherwise.
"""

# Imported on first use (llm_course.exercises._registry), once the package is initialised: the
# exercises import the package's public names, wherever the package defines them.
from . import ch01, ch02, ch03, ch04, ch05, ch06, ch07, ch08

EXERCISES = (*ch01.EXERCISES, *ch02.EXERCISES, *ch03.EXERCISES, *ch04.EXERCISES,
             *ch05.EXERCISES, *ch06.EXERCISES, *ch07.EXERCISES, *ch08.EXERCISES)
