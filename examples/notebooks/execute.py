"""Run every teaching notebook top to bottom and save it with its outputs, so the
notebooks read on a code host without running them. Run it after editing one:

    python examples/notebooks/execute.py            # all of them
    python examples/notebooks/execute.py 02         # the ones whose name contains 02

The test suite checks that every code cell of a committed notebook has its output.
"""

import base64
import io
import sys
from pathlib import Path

import nbclient
import nbformat
from PIL import Image

HERE = Path(__file__).resolve().parent


MAX_WIDTH = 720  # pixels of a saved figure: enough to read, small enough to commit


def small_png(data: str) -> str:
    """A base64 PNG scaled to at most MAX_WIDTH and reduced to 64 colors."""
    image = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
    if image.width > MAX_WIDTH:
        image = image.resize((MAX_WIDTH, round(image.height * MAX_WIDTH / image.width)),
                             Image.LANCZOS)
    buffer = io.BytesIO()
    image.quantize(64).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


def shrink(notebook) -> None:
    for cell in notebook.cells:
        cell.get("metadata", {}).pop("execution", None)  # no run timestamps in diffs
        for output in cell.get("outputs", []):
            if "image/png" in output.get("data", {}):
                output["data"]["image/png"] = small_png(output["data"]["image/png"])


def execute(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(HERE)}}).execute()
    shrink(notebook)
    nbformat.write(notebook, path)


if __name__ == "__main__":
    for path in sorted(HERE.glob("*.ipynb")):
        if len(sys.argv) < 2 or any(part in path.name for part in sys.argv[1:]):
            print(f"executing {path.name}", flush=True)
            execute(path)
