"""Execute notebooks top to bottom in a fresh kernel and store their outputs, as nbval will check them.

Usage: python scripts/run_notebooks.py notebooks/01_text_data.ipynb [...]

Cells tagged `raises-exception` may fail (they demonstrate an error); any other error stops the run.
The kernelspec is normalised to `python3` so that CI and every learner's Jupyter find the kernel.
"""

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def run(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    notebook.metadata["kernelspec"] = KERNELSPEC
    start = time.perf_counter()
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=1200, resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)  # timestamps would change the file on every run
    nbformat.write(notebook, path)
    print(f"{path}: executed in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    os.environ["LLM_COURSE_QUICK_BASE"] = "1"  # stored outputs use the quick base model (see fine_tuning_base)
    for name in sys.argv[1:]:
        run(Path(name))
