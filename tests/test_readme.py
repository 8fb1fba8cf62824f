"""The README's tour and the docs' code run as written (what a newcomer copies never rots)."""

import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXTENDING = ROOT / "docs" / "extending.md"


def test_readme_tour_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the tour saves a checkpoint in the working directory
    tour = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    namespace = {}
    exec(compile(tour, "README.md tour", "exec"), namespace)
    assert (tmp_path / "fcn8s.npz").is_file()
    assert namespace["again"].config == namespace["model"].config


def test_docs_adding_an_op_example_runs():
    block = next(b for b in re.findall(r"```python\n(.*?)```", EXTENDING.read_text(), re.S)
                 if "class LeakyReLU" in b)
    namespace = {}
    exec(compile(block, "docs/extending.md", "exec"), namespace)
    x = namespace["x"]
    out = namespace["leaky_relu"](x, 0.1)
    np.testing.assert_allclose(out.data, np.where(x.data < 0, 0.1 * x.data, x.data))
