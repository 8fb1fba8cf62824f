"""The README's tour runs as written (so the first code a newcomer copies never rots)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tour_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the tour saves a checkpoint in the working directory
    tour = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    namespace = {}
    exec(compile(tour, "README.md tour", "exec"), namespace)
    assert (tmp_path / "fcn8s.npz").is_file()
    assert namespace["again"].config == namespace["model"].config
