"""Segment images with a trained model: palette-PNG masks and overlays.

    tinyfcn-predict runs/latest/checkpoint-best.npz photo.jpg more/ --out masks/
    tinyfcn-predict --weights fcn8s.pth --model fcn8s --backbone vgg16 --num-classes 21 photo.jpg

The model is a checkpoint written by tinyfcn-train, or, with --weights, a bare state
dict (.pth, .pt, .safetensors, .npz; e.g. a reference FCN-8s file) for the network
that --model, --backbone and --num-classes describe. For each input image NAME.ext it
writes NAME.png (class indices in the palette: opens as a picture, reads back as
labels) and NAME-overlay.png; folders are searched recursively and their sub-folders
kept. Two inputs with the same NAME get NAME-jpg.png, NAME-png.png. The output folder
may not be, or lie inside, an input folder. An image of more than --max-pixels pixels
is predicted in overlapping windows, so a camera photo of any size fits in memory.
An input that cannot be read is reported and skipped: the others are written and the
exit status is 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import tinyfcn
from tinyfcn import models
from tinyfcn.data import (
    IMAGE_SUFFIXES,
    VOC_CLASSES,
    DataError,
    read_image,
    write_image,
    write_label,
)
from tinyfcn.data.visualize import class_legend, overlay, panel
from tinyfcn.models.backbones import BACKBONES
from tinyfcn.models.base import MAX_PIXELS
from tinyfcn.serialization import unwrap_state_dict

# the network --weights holds unless told otherwise: the reference FCN-8s on PASCAL VOC
WEIGHTS_DEFAULTS = {"model": "fcn8s", "backbone": "vgg16", "num_classes": len(VOC_CLASSES)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [options] CHECKPOINT INPUT [INPUT ...]\n"
              "       %(prog)s [options] --weights FILE [--model M] [--backbone B] "
              "[--num-classes N] INPUT [INPUT ...]")
    p.add_argument("paths", type=Path, nargs="+", metavar="PATH",
                   help="the checkpoint (unless --weights is given), then image files or "
                        "folders of images")
    p.add_argument("--out", type=Path, default=Path("predictions"),
                   help="output folder (default: %(default)s)")
    p.add_argument("--opacity", type=float, default=0.5,
                   help="how strongly the class colors cover the image in the overlays "
                        "(default: %(default)s)")
    p.add_argument("--legend", action="store_true",
                   help="add a legend of the classes found under each overlay")
    p.add_argument("--no-overlay", action="store_true",
                   help="write the label PNGs only")
    g = p.add_argument_group("large images")
    g.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                   help="predict images up to this many pixels whole, larger ones in "
                        "overlapping windows of at most this many (default: %(default)s)")
    g.add_argument("--tile", type=int, default=None,
                   help="predict every image in TILE x TILE windows; 0: always whole "
                        "(default: as --max-pixels decides)")
    g.add_argument("--overlap", type=float, default=0.25,
                   help="the share of a window its neighbour covers too, where scores "
                        "are averaged (default: %(default)s)")
    g.add_argument("--tta", choices=["flip"], default=None,
                   help="test-time augmentation: average with the mirrored image's scores")
    w = p.add_argument_group("a bare state dict instead of a checkpoint")
    w.add_argument("--weights", type=Path, metavar="FILE", help="the state dict file")
    w.add_argument("--model", choices=sorted(models.MODELS),
                   help=f"its network (default: {WEIGHTS_DEFAULTS['model']})")
    w.add_argument("--backbone", choices=sorted(BACKBONES),
                   help=f"its encoder (default: {WEIGHTS_DEFAULTS['backbone']})")
    w.add_argument("--num-classes", type=int,
                   help=f"its number of classes (default: {WEIGHTS_DEFAULTS['num_classes']}: "
                        f"PASCAL VOC's, whose class names are then used)")
    args = p.parse_args(argv)
    if not 0 <= args.opacity <= 1:
        p.error("--opacity must lie in [0, 1]")
    if args.max_pixels < 1:
        p.error("--max-pixels must be >= 1")
    if args.tile is not None and args.tile < 0:
        p.error("--tile must be >= 0")
    if not 0 <= args.overlap < 1:
        p.error("--overlap must lie in [0, 1)")
    described = [f"--{k.replace('_', '-')}" for k in WEIGHTS_DEFAULTS
                 if getattr(args, k) is not None]
    if args.weights is None:
        if described:
            p.error(f"{', '.join(described)}: these describe the network of --weights; a "
                    f"checkpoint names its own")
        if len(args.paths) < 2:
            p.error("give a checkpoint and at least one image or folder")
        args.checkpoint, args.inputs = args.paths[0], args.paths[1:]
    else:
        for key, value in WEIGHTS_DEFAULTS.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        if args.num_classes < 1:
            p.error("--num-classes must be >= 1")
        args.checkpoint, args.inputs = None, args.paths
    return args


def image_files(inputs) -> tuple[list, list]:
    """(path, name) of every image: files as given, folders searched recursively (every
    entry with an image suffix but a folder: a broken link is reported when read, not
    passed over); `name` is the path relative to its folder without the suffix (the
    output's name). And one message per input that does not exist or link to a folder
    that is not searched."""
    files, missing = [], []
    for path in inputs:
        if path.is_dir():
            entries = sorted(path.rglob("*"))  # links to folders are not followed (loops)
            files += [(file, file.relative_to(path).with_suffix(""))
                      for file in entries
                      if file.suffix.lower() in IMAGE_SUFFIXES and not file.is_dir()]
            missing += [f"{link}: a link to a folder, not searched (give the folder itself)"
                        for link in entries if link.is_symlink() and link.is_dir()]
        elif path.exists():
            files.append((path, Path(path.stem)))
        else:
            missing.append(f"{path}: no such image or folder")
    return files, missing


def output_names(files) -> list:
    """One distinct output name per input: NAME, or NAME-ext where two inputs share a name
    (a.jpg and a.png), or NAME-ext-2, ... where even that collides, or where one input's
    mask would be another's overlay (x-overlay.png beside x.png)."""
    stems = [name for _, name in files]
    taken, names = set(), []
    for (path, name), original in zip(files, stems):
        if stems.count(original) > 1:
            name = name.with_name(f"{name.name}-{path.suffix.lstrip('.').lower()}")
        candidate, n = name, 2
        while _written(candidate) & taken:
            candidate, n = name.with_name(f"{name.name}-{n}"), n + 1
        taken |= _written(candidate)
        names.append(candidate)
    return names


def _written(name: Path) -> set:
    """The files an input of output name `name` writes (compared as a case-insensitive
    file system would)."""
    return {str(name).lower(), f"{name}-overlay".lower()}


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


def load_checkpoint(path):
    """(model, class names, colors) of a checkpoint written by tinyfcn-train."""
    ckpt = tinyfcn.load(path)
    if isinstance(ckpt, dict) and "config" not in ckpt:
        raise DataError(f"{path}: not a tinyfcn checkpoint (no model config); for a bare "
                        f"state dict give --weights {path} with --model, --backbone and "
                        f"--num-classes")
    return (models.from_checkpoint(ckpt, path).eval(), ckpt.get("class_names"),
            ckpt.get("palette"))


def load_weights(path, model_name: str, backbone: str, num_classes: int):
    """(model, class names, colors) of a bare state dict for the network described (or
    one wrapped as {"state_dict": ...}, {"model_state_dict": ...} or {"model": ...}, as
    training scripts save them, whatever the file's format). fc6's width is read from the
    weights (4096 in VGG16, less in small nets)."""
    state = unwrap_state_dict(tinyfcn.load(path))  # load gives a dict or raises
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise DataError(f"{path}: not a state dict (a dict of arrays by parameter name)")
    fc6 = state.get("fc6.weight")
    model = models.MODELS[model_name](num_classes, backbone=backbone,
                                      fc_width=None if fc6 is None else fc6.shape[0])
    try:
        model.load_state_dict(state)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None
    names = list(VOC_CLASSES) if num_classes == len(VOC_CLASSES) else None
    return model.eval(), names, None


def main(argv=None) -> int:
    args = parse_args(argv)
    tinyfcn.configure_runtime()
    options = {"tile": args.tile, "overlap": args.overlap, "max_pixels": args.max_pixels,
               "tta": args.tta}
    try:
        if args.weights is None:
            model, class_names, colors = load_checkpoint(args.checkpoint)
        else:
            model, class_names, colors = load_weights(args.weights, args.model,
                                                       args.backbone, args.num_classes)
        class_list = class_names or [str(c) for c in range(model.num_classes)]
        files, skipped = image_files(args.inputs)
        for message in skipped:
            print(f"skipped: {message}", file=sys.stderr)
        if not files:
            raise DataError("no images found in " + ", ".join(map(str, args.inputs)))
        names = output_names(files)
        check_outputs(args.out, args.inputs, files, names)
        written = 0
        for (path, _), name in zip(files, names):
            try:
                image = read_image(path)
            except DataError as e:
                print(f"skipped: {e}", file=sys.stderr)
                skipped.append(str(e))
                continue
            try:
                pred = model.predict(image, **options)
            except MemoryError:
                raise DataError(f"{path}: out of memory predicting {image.shape[1]} x "
                                f"{image.shape[0]} pixels: lower --max-pixels or --tile"
                                ) from None
            write_label(args.out / f"{name}.png", pred, colors)
            if not args.no_overlay:
                picture = overlay(image, pred, args.opacity, colors)
                if args.legend:
                    # background is left clear in an overlay: not in its legend either
                    legend = class_legend([pred[pred > 0]], class_list, colors)
                    picture = panel([[picture]], height=picture.shape[0], gap=0,
                                    legend=legend)
                write_image(args.out / f"{name}-overlay.png", picture)
            written += 1
            print(f"{path}: {', '.join(class_list[c] for c in np.unique(pred))}")
    except (DataError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"Wrote {written} masks{'' if args.no_overlay else ' and overlays'} to {args.out}/")
    if skipped:
        print(f"skipped {len(skipped)} input(s): see the messages above", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
