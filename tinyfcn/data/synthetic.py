"""The built-in data set: procedurally drawn scenes in the PASCAL VOC layout.

A fair miniature of VOC that needs no download. 21 classes: background and 20
object classes, each a pair (shape, texture) of 5 shapes x 4 textures. Like
VOC's classes, each has a typical color (a hue), but hues are jittered so
that neighbouring classes overlap, and hue neighbours differ in shape and
texture: color alone does not tell a class, a net must also see shape
(spatial context) and texture (fine detail). Each scene has several
objects at random scale and rotation that occlude each other, small objects
and thin bars, a cluttered textured background, and a void band (255) along
object borders as in VOC. Image sizes vary.

`ensure(root)` generates the set once, verifies it against its manifest on
later calls and regenerates it if anything is missing or damaged, but never
over a file the manifest does not name or one a user has changed (it refuses,
naming them). Generation is deterministic: the same seed writes the same files.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tinyfcn.data.errors import DataError
from tinyfcn.data.image_io import read_image, read_label, write_image, write_label
from tinyfcn.data.palette import VOID
from tinyfcn.data.text import read_lines
from tinyfcn.fileio import atomic_write

GENERATOR_VERSION = 2
SHAPES = ("disk", "square", "triangle", "cross", "bar")
TEXTURES = ("plain", "stripes", "checker", "dots")
CLASS_NAMES = ("background",) + tuple(f"{t}-{s}" for s in SHAPES for t in TEXTURES)
DEFAULT_SIZES = {"train": 480, "val": 120}


def default_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "tinyfcn" / f"synthetic-v{GENERATOR_VERSION}"


# ------------------------------------------------------------------- drawing

def _polygon(shape: str, cx: float, cy: float, size: float, angle: float, rng) -> list:
    """Vertices of a shape of about `size` pixels across, rotated by `angle`."""
    r = size / 2
    if shape == "disk":
        t = np.linspace(0, 2 * np.pi, 28, endpoint=False)
        aspect = rng.uniform(0.8, 1.0)
        pts = np.stack([r * np.cos(t), r * aspect * np.sin(t)], 1)
    elif shape == "square":
        pts = np.array([[-r, -r], [r, -r], [r, r], [-r, r]]) * 0.85
    elif shape == "triangle":
        t = np.array([-90, 30, 150]) * np.pi / 180
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1) * 1.1
    elif shape == "cross":
        a, b = r, r * 0.36
        pts = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a],
                        [-b, b], [-a, b], [-a, -b], [-b, -b]])
    else:  # a thin bar: long and a few pixels wide
        half_width = rng.uniform(2.5, 4.0)
        pts = np.array([[-r * 1.4, -half_width], [r * 1.4, -half_width],
                        [r * 1.4, half_width], [-r * 1.4, half_width]])
    c, s = np.cos(angle), np.sin(angle)
    rotated = pts @ np.array([[c, s], [-s, c]])
    return [(cx + x, cy + y) for x, y in rotated]


def _texture(kind: str, H: int, W: int, cx, cy, angle, period) -> np.ndarray:
    """(H, W) in {0, 1}: which of the object's two colors each pixel takes."""
    y, x = np.mgrid[:H, :W].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u = (x - cx) * c + (y - cy) * s
    v = -(x - cx) * s + (y - cy) * c
    if kind == "plain":
        return np.zeros((H, W), np.float32)
    if kind == "stripes":
        return (np.floor(u / period) % 2).astype(np.float32)
    if kind == "checker":
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    # dots: small discs on a grid
    p = period * 2
    du, dv = (u % p) - p / 2, (v % p) - p / 2
    return (du * du + dv * dv < (p * 0.3) ** 2).astype(np.float32)


# Hue order of the classes: hue neighbours differ in shape and in texture.
HUE_RANK = {cls: (cls * 7) % 20 for cls in range(1, 21)}


def _hsv(h, s, v) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255


def _class_colors(cls: int, rng):
    """Two colors of one hue (the class's, jittered so neighbours overlap) that differ in
    brightness: the texture is drawn in them."""
    hue = HUE_RANK[cls] / 20 + rng.uniform(-0.04, 0.04)
    sat = rng.uniform(0.5, 0.95)
    v1 = rng.uniform(0.55, 0.95)
    v2 = v1 - rng.uniform(0.3, 0.45)
    return _hsv(hue, sat, v1), _hsv(hue, sat, max(v2, 0.1))


def _random_color(rng, saturation=0.25) -> np.ndarray:
    """A muted clutter color: backgrounds are greyish, like most of VOC's."""
    return _hsv(rng.random(), rng.uniform(0, saturation), rng.uniform(0.2, 0.9))


def _background(H: int, W: int, rng) -> np.ndarray:
    """Smooth muted blobs plus random thin lines and noise: clutter that is not an object."""
    small_shape = (max(H // 16, 2), max(W // 16, 2))
    small = np.stack([_random_color(rng) for _ in range(small_shape[0] * small_shape[1])])
    small = small.reshape(*small_shape, 3).astype(np.uint8)
    canvas = Image.fromarray(small).resize((W, H), Image.BICUBIC)
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(3, 8)):
        x0, y0 = rng.uniform(0, W), rng.uniform(0, H)
        x1, y1 = x0 + rng.uniform(-40, 40), y0 + rng.uniform(-40, 40)
        draw.line([(x0, y0), (x1, y1)], fill=tuple(int(v) for v in _random_color(rng)),
                  width=1)
    for _ in range(rng.integers(2, 5)):  # soft blobs
        x0, y0, d = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(6, 20)
        draw.ellipse([x0, y0, x0 + d, y0 + d * rng.uniform(0.5, 1.5)],
                     fill=tuple(int(v) for v in _random_color(rng)))
    canvas = canvas.filter(ImageFilter.GaussianBlur(1.2))
    return np.array(canvas, dtype=np.float32)


def _void_band(label: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within `radius` of a border between two different classes."""
    H, W = label.shape
    padded = np.pad(label, radius, mode="edge")
    border = np.zeros((H, W), bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = padded[radius + dy:radius + dy + H, radius + dx:radius + dx + W]
            border |= shifted != label
    return border


def draw_scene(rng: np.random.Generator, min_size: int = 88, max_size: int = 136):
    """One (image uint8 (H, W, 3), label uint8 (H, W)) scene."""
    H, W = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
    image = _background(H, W, rng)
    label = np.zeros((H, W), np.uint8)
    for _ in range(rng.integers(2, 6)):
        cls = int(rng.integers(1, len(CLASS_NAMES)))
        shape, texture = SHAPES[(cls - 1) // 4], TEXTURES[(cls - 1) % 4]
        small = rng.random() < 0.3
        size = rng.uniform(12, 20) if small else rng.uniform(22, 46)
        cx, cy = rng.uniform(0.1 * W, 0.9 * W), rng.uniform(0.1 * H, 0.9 * H)
        angle = rng.uniform(0, 2 * np.pi)
        mask_image = Image.new("L", (W, H), 0)
        ImageDraw.Draw(mask_image).polygon(_polygon(shape, cx, cy, size, angle, rng), fill=1)
        mask = np.array(mask_image, bool)
        if mask.sum() < 12:
            continue
        a, b = _class_colors(cls, rng)
        pattern = _texture(texture, H, W, cx, cy, rng.uniform(0, np.pi),
                           rng.choice([2, 3]))[..., None]
        object_pixels = a * (1 - pattern) + b * pattern
        image[mask] = object_pixels[mask]
        label[mask] = cls  # later objects occlude earlier ones
    void = _void_band(label, radius=1)
    image += rng.normal(0, 6, image.shape)  # sensor noise
    label = np.where(void, VOID, label).astype(np.uint8)
    return image.clip(0, 255).astype(np.uint8), label


# --------------------------------------------------------------- the data set

def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generate(root, sizes=None, seed: int = 0) -> Path:
    """Write the data set into `root` (VOC layout + manifest.json); returns `root`.

    It is written to a temporary folder beside `root` and moved into place, so an
    interrupted generation never leaves a half-written data set."""
    root = Path(root)
    _check_replaceable(root)
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    for stale in root.parent.glob(f".{root.name}.*.partial"):  # left by a killed run
        if _is_ours(stale.name, root.name, "partial"):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = root.with_name(f".{root.name}.{secrets.token_hex(6)}.partial")
    (tmp / "ImageSets" / "Segmentation").mkdir(parents=True)
    files = {}
    for split_index, (split, count) in enumerate(sorted(sizes.items())):
        rng = np.random.default_rng([seed, split_index])
        ids = [f"{split}_{i:05d}" for i in range(count)]
        for image_id in ids:
            image, label = draw_scene(rng)
            write_image(tmp / "JPEGImages" / f"{image_id}.jpg", image)
            write_label(tmp / "SegmentationClass" / f"{image_id}.png", label)
        (tmp / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    (tmp / "class_names.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    for path in sorted(tmp.rglob("*")):
        if path.is_file():
            files[str(path.relative_to(tmp))] = _sha256(path)
    manifest = {"generator_version": GENERATOR_VERSION, "seed": seed, "sizes": sizes,
                "files": files}
    atomic_write(tmp / "manifest.json", lambda f: f.write(json.dumps(manifest).encode()))
    old = root.with_name(f".{root.name}.{secrets.token_hex(6)}.old")
    if root.exists():
        os.replace(root, old)  # the previous version stays whole until the new one is in place
    os.replace(tmp, root)
    shutil.rmtree(old, ignore_errors=True)
    return root


def _is_ours(name: str, root_name: str, kind: str) -> bool:
    """A temporary folder name this module makes: .<root>.<12 hex digits>.<kind>."""
    middle = name[len(root_name) + 2:-len(kind) - 1]
    return (name.startswith(f".{root_name}.") and name.endswith(f".{kind}")
            and len(middle) == 12 and all(c in "0123456789abcdef" for c in middle))


def _check_replaceable(root: Path) -> None:
    """Generate only into a missing or empty folder, or over a data set generated here
    whose every file is one we wrote: never replace what a user put there or changed."""
    if not root.exists():
        return
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder: refusing to generate the built-in "
                        f"data set there")
    if not any(root.iterdir()):
        return
    theirs = _not_ours(root)
    if theirs:
        named = ", ".join(theirs[:3]) + (f" and {len(theirs) - 3} more" if len(theirs) > 3
                                         else "")
        raise DataError(f"{root} holds files that tinyfcn did not generate or that were "
                        f"changed since ({named}): refusing to replace them with the built-in "
                        f"data set (move them out, use an empty or new --data-dir, or train on "
                        f"the folder as it is with --voc-root)")


def _not_ours(root: Path) -> list:
    """What in `root` tinyfcn did not write as it is: files and folders its manifest does not
    name, and named files that differ from what we wrote but still read (an edited split
    list, a relabelled mask). A named file that no longer reads is damage: ours to rewrite."""
    try:
        files = json.loads((root / "manifest.json").read_text())["files"]
        if not isinstance(files, dict) or not files:
            raise ValueError("no files")
    except (OSError, ValueError, KeyError, TypeError):
        return sorted(p.name for p in root.iterdir())  # no manifest of ours: nothing is ours
    folders = {str(parent) for name in files for parent in Path(name).parents}
    theirs = []
    for folder, subfolders, names in os.walk(root):
        here = Path(folder).relative_to(root)
        theirs += [str(here / d) + "/" for d in subfolders if str(here / d) not in folders]
        subfolders[:] = [d for d in subfolders if str(here / d) in folders]
        for name in names:
            relative = str(here / name)
            if relative == "manifest.json":
                continue
            if relative not in files or (_sha256(root / relative) != files[relative]
                                         and _still_reads(root / relative)):
                theirs.append(relative)
    return sorted(theirs)


def _still_reads(path: Path) -> bool:
    """True if `path` (a file we wrote that has changed) still reads as its kind of file."""
    try:
        if path.suffix == ".jpg":
            read_image(path)
        elif path.suffix == ".png":
            read_label(path)
        else:
            read_lines(path)
    except DataError:
        return False
    return True


def verify(root, sizes=None, seed: int = 0) -> bool:
    """True if `root` holds exactly the data set `generate(root, sizes, seed)` would write."""
    root = Path(root)
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    if (manifest.get("generator_version"), manifest.get("seed"), manifest.get("sizes")) != (
            GENERATOR_VERSION, seed, sizes):
        return False
    for name, digest in manifest.get("files", {}).items():
        path = root / name
        if not path.is_file() or _sha256(path) != digest:
            return False
    return bool(manifest.get("files"))


def ensure(root=None, sizes=None, seed: int = 0) -> Path:
    """The data set at `root` (default: the user's cache), generated or repaired if needed."""
    root = default_root() if root is None else Path(root)
    if not verify(root, sizes, seed):
        generate(root, sizes, seed)
    return root
