"""Segment images with a trained checkpoint: palette-PNG masks and overlays.

    python examples/predict.py runs/latest/checkpoint-best.npz photo.jpg more/ --out masks/

For each input image NAME.ext it writes NAME.png (class indices in the VOC
palette: opens as a picture, reads back as labels) and NAME-overlay.png; folders
are searched recursively and their sub-folders kept. Two inputs with the same
NAME get NAME-jpg.png, NAME-png.png. The output folder may not be, or lie inside,
an input folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import tinyfcn
from tinyfcn import models
from tinyfcn.data import DataError, read_image, write_image, write_label
from tinyfcn.data.visualize import class_legend, overlay, panel

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a checkpoint written by train_voc_subset.py")
    p.add_argument("inputs", type=Path, nargs="+", help="image files or folders of images")
    p.add_argument("--out", type=Path, default=Path("predictions"), help="output folder")
    p.add_argument("--opacity", type=float, default=0.5,
                   help="how strongly the class colours cover the image in the overlays")
    p.add_argument("--legend", action="store_true",
                   help="add a legend of the classes found under each overlay")
    p.add_argument("--no-overlay", action="store_true",
                   help="write the label PNGs only")
    args = p.parse_args(argv)
    if not 0 <= args.opacity <= 1:
        p.error("--opacity must lie in [0, 1]")
    return args


def image_files(inputs):
    """(path, name) of every image: files as given, folders searched recursively; `name` is
    the path relative to its folder without the suffix (the output's name)."""
    for path in inputs:
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
                    yield file, file.relative_to(path).with_suffix("")
        elif path.exists():
            yield path, Path(path.stem)
        else:
            raise DataError(f"{path}: no such image or folder")


def output_names(files) -> list:
    """One distinct output name per input: NAME, or NAME-ext where two inputs share a name
    (a.jpg and a.png), or NAME-ext-2, ... where even that collides."""
    stems = [name for _, name in files]
    taken, names = set(), []
    for (path, name), original in zip(files, stems):
        if stems.count(original) > 1:
            name = name.with_name(f"{name.name}-{path.suffix.lstrip('.').lower()}")
        candidate, n = name, 2
        while str(candidate).lower() in taken:
            candidate, n = name.with_name(f"{name.name}-{n}"), n + 1
        taken.add(str(candidate).lower())
        names.append(candidate)
    return names


def check_outputs(out: Path, inputs, files, names) -> None:
    """Outputs must never replace the images they come from: refuse an output folder that
    is, or lies inside, an input folder, and any output path that is an input file."""
    out = out.resolve()
    for path in inputs:
        if path.is_dir() and (out == path.resolve() or path.resolve() in out.parents):
            raise DataError(f"--out {out} is inside the input folder {path}: choose a "
                            f"folder outside the inputs")
    sources = {path.resolve() for path, _ in files}
    for name in names:
        for target in (out / f"{name}.png", out / f"{name}-overlay.png"):
            if target in sources:
                raise DataError(f"writing {target} would replace an input image: choose "
                                f"another --out")


def load_model(path):
    ckpt = tinyfcn.load(path)
    return (models.from_checkpoint(ckpt, path).eval(), ckpt.get("class_names"),
            ckpt.get("palette"))


def main(argv=None) -> int:
    args = parse_args(argv)
    tinyfcn.configure_runtime()
    try:
        model, class_names, colours = load_model(args.checkpoint)
        files = list(image_files(args.inputs))
        if not files:
            raise DataError("no images found in " + ", ".join(map(str, args.inputs)))
        names = output_names(files)
        check_outputs(args.out, args.inputs, files, names)
        for (path, _), name in zip(files, names):
            image = read_image(path)
            pred = model.predict(image)
            class_list = class_names or [str(c) for c in range(model.num_classes)]
            write_label(args.out / f"{name}.png", pred, colours)
            if not args.no_overlay:
                picture = overlay(image, pred, args.opacity, colours)
                if args.legend:
                    picture = panel([[picture]], height=picture.shape[0], gap=0,
                                    legend=class_legend([pred], class_list, colours))
                write_image(args.out / f"{name}-overlay.png", picture)
            print(f"{path}: {', '.join(class_list[c] for c in np.unique(pred))}")
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Wrote {len(files)} masks{'' if args.no_overlay else ' and overlays'} to "
          f"{args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
