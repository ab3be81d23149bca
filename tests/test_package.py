"""The package's surface: every public name of every module is importable from `llm_course` itself."""

import llm_course


def test_star_import_gives_every_public_name_of_every_module():
    namespace = {}
    exec("from llm_course import *", namespace)
    for module in llm_course.MODULES:
        missing = [name for name in module.__all__ if namespace.get(name) is not getattr(module, name)]
        assert not missing, f"{module.__name__} lists {missing} in __all__, but llm_course does not import them"
