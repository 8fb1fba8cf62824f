"""tinyfcn-train (and `python examples/train_voc_subset.py`): train an FCN on a PASCAL
VOC-layout data set, with no arguments on the built-in one. Writes to --out what
tinyfcn.report lists and tinyfcn.train's checkpoints; Ctrl-C saves checkpoint-last.npz and
--resume continues exactly there. Exit status: 0 done, 1 diverged, 2 bad usage, data or
output folder, 130 interrupted. Argument parsing and wiring only: the loop, the resume
policy and the recipes live in tinyfcn.train and tinyfcn.recipes."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from pathlib import Path

import tinyfcn
from tinyfcn import models, optim, recipes
from tinyfcn.data import DataError, synthetic
from tinyfcn.data.loader import batches_per_epoch
from tinyfcn.data.transforms import TrainAugment
from tinyfcn.distributed import World
from tinyfcn.losses import LOSSES
from tinyfcn.models.backbones import BACKBONES
from tinyfcn.report import OutputError, print_class_weights
from tinyfcn.train import Diverged, Interrupted, RunSettings, Trainer

PATHS = ("voc_root", "data_dir", "out", "resume", "init_from", "backbone_weights")


def at_least(low, kind=int, strict=False):
    """An argparse type: a number of `kind` >= `low` (> `low` if `strict`)."""
    def parse(text):
        value = kind(text)
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low}, "
                                             f"got {text}")
        return value
    return parse


POSITIVE, COUNT, NON_NEGATIVE = at_least(0, float, strict=True), at_least(1), at_least(0)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one (not None, not a flag's False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tinyfcn-train", formatter_class=HelpFormatter, allow_abbrev=False,
        description="Train an FCN (FCN-32s/16s/8s or DeconvNet) for semantic segmentation on "
                    "a PASCAL VOC-layout data set. With no arguments it trains FCN-8s-lite on "
                    "the built-in generated data set (no download) in a few minutes.",
        epilog="A data set: JPEGImages/<id>.jpg (.jpeg, .png), SegmentationClass/<id>.png, "
               "ImageSets/Segmentation/<split>.txt (one id per line) and class_names.txt (one "
               "class per line). A label image is a PNG of class indices (palette or "
               "greyscale; 255, or --ignore-index, marks void), or an RGB color mask when "
               "palette.txt lists one 'R G B' line per class. Check one with "
               "tinyfcn-check-data ROOT.")
    add = p.add_argument_group("data").add_argument
    add("--voc-root", type=Path, metavar="ROOT", help="a VOC-layout folder (see below); "
        "without it, the built-in generated data set")
    add("--data-dir", type=Path, default=synthetic.default_root(),
        help="where the built-in data set is generated and cached")
    add("--train-split", default="train", help="split file name for training")
    add("--val-split", default="val", help="split file name for validation")
    add("--subset", type=COUNT, metavar="N", help="use N images of each split, chosen "
        "reproducibly from the seed")
    add("--skip-bad", action="store_true", help="check every image first; warn about and skip "
        "bad files instead of stopping")
    add("--scale", type=POSITIVE, default=1.0, help="resize every image (and label) by this "
        "factor first")
    add("--crop-size", type=COUNT, nargs=2, metavar=("H", "W"), help="training crop (random "
        "scale 0.75-1.25, crop, flip); default 96 96 on the built-in data, fitted to the "
        "images of --voc-root")
    add("--ignore-index", type=int, default=255, metavar="VALUE",
        help="the label value that marks void (unlabelled) pixels")
    add("--void-color", type=int, nargs=3, default=(0, 0, 0), metavar=("R", "G", "B"),
        help="with color masks (palette.txt): the color of void pixels, unless a class owns it")
    add("--class-weights", default="none", metavar="none|auto|W1,W2,...",
        help="weigh the loss per class: auto = median-frequency balancing from the training "
             "split (for rare classes), or one weight per class")
    add = p.add_argument_group("model").add_argument
    add("--model", default="fcn8s", choices=sorted(models.MODELS), help="the architecture")
    add("--backbone", default="lite", choices=sorted(BACKBONES),
        help="lite: the CPU-sized VGG; vgg16: FCN's own network")
    add("--backbone-weights", type=Path, metavar="PATH",
        help="start from a trained VGG classifier of the same backbone (.pth, .safetensors or "
             ".npz; torchvision's layout, e.g. vgg16-397923af.pth, or "
             "examples/pretrain_classifier.py's): its convs and its FC layers, "
             "convolutionalized into fc6 / fc7")
    add = p.add_argument_group("training").add_argument
    add("--epochs", type=COUNT, default=11, help="epochs in all (a resumed run counts the "
        "epochs it already did)")
    add("--time-budget", type=at_least(0, float), metavar="SECONDS",
        help="stop training after this many seconds (then validate and save; validation "
             "waits for training); default 330 on the built-in data, none on --voc-root; 0 "
             "for no limit")
    add("-b", "--batch-size", type=COUNT, default=4, help="images per step")
    add("--loss", default="ce", choices=sorted(LOSSES), help="cross-entropy, Dice, focal, "
        "Lovasz-softmax or cross-entropy plus Dice")
    add("--optimizer", default="adam", choices=sorted(optim.OPTIMIZERS), help="the optimizer")
    add("--lr", type=float, help=f"base learning rate (default: {defaults('lr')}; the "
        "reference's for --recipe reference)")
    add("--momentum", type=float, help=f"SGD's momentum (default: {defaults('momentum')})")
    add("--weight-decay", type=float, help=f"L2 weight decay (default: "
        f"{defaults('weight_decay')})")
    add("--lr-schedule", default="poly", choices=sorted(optim.SCHEDULES),
        help="how the learning rate falls over the run (step: x0.1 at half and at three "
             "quarters of it, optim.MilestoneLR)")
    add("--warmup", type=NON_NEGATIVE, default=0, metavar="STEPS",
        help="raise the learning rate linearly over the first STEPS steps")
    add("--recipe", default="default", choices=["default", "reference"],
        help="reference: the paper's fine-tuning (SGD momentum 0.99, fixed lr, biases at 2x "
             "lr without decay, upsampling frozen at bilinear)")
    add("--learn-upsampling", action="store_true",
        help="with --recipe reference: train the upsampling layers too")
    add("--clip-grad", type=POSITIVE, metavar="NORM", help="scale gradients down to this global "
        "L2 norm")
    add("--seed", type=int, default=0, help="seed of the data order, augmentation and "
        "initialisation")
    add("--out", type=Path, default=Path("runs/latest"), help="output folder (a resumed run: "
        "its checkpoint's folder)")
    add("--resume", type=Path, metavar="PATH", help="continue a run from its checkpoint: "
        "weights, optimizer, epoch and random state")
    add("--init-from", type=Path, metavar="PATH", help="start fresh from the weights of a "
        "checkpoint whose names and shapes match (staged training: 32s -> 16s -> 8s)")
    add("--val-every", type=COUNT, metavar="N", help="validate every N epochs (and after the "
        "last); default 1 on the built-in data, fitted to the images of --voc-root")
    add("--workers", type=NON_NEGATIVE, default=0, metavar="N", help="threads that read and "
        "augment "
        "the next batches during a step (the same batches either way)")
    add("--eval-only", action="store_true", help="only validate the model of --resume / "
        "--init-from: writes eval.json, confusion.csv, per-class-iou.png, confusion.png")
    add("--best-with-optimizer", action="store_true", help="keep the optimizer state in "
        "checkpoint-best.npz too (resumable, about 3x larger); by default it holds the "
        "weights only")
    return p


def defaults(key: str) -> str:
    """Each optimizer's default `key`, as optim.OPTIMIZERS holds it (for --help)."""
    return ", ".join(f"{values[key]:g} for {name}"
                     for name, (_, values) in optim.OPTIMIZERS.items() if key in values)


UNSET = object()


def parse_args(argv=None):
    """The arguments, and the settings the command line gave (a resumed run takes the
    others from its checkpoint)."""
    p = parser()
    args = p.parse_args(argv)
    # argparse fills in a default only where the namespace has no value yet
    bare = p.parse_args(argv, argparse.Namespace(**dict.fromkeys(vars(args), UNSET)))
    return args, {k for k, v in vars(bare).items() if v is not UNSET}


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def class_weights(args, train):
    """None, or one loss weight per class (printed as a table)."""
    if args.class_weights == "none":
        return None
    weights, shares = recipes.class_weights(train, args.class_weights)
    print_class_weights(train.class_names, weights, shares)
    return weights


def build_trainer(args, world, model=None) -> Trainer:
    """The Trainer of `args`; `model` (a resumed run's) or a new one."""
    if args.voc_root is None:
        print("Preparing the built-in data set ...", flush=True)
        if world.is_root:
            synthetic.ensure(args.data_dir)
        world.barrier("preparing the data set")  # the others wait for rank 0
    root = args.voc_root or synthetic.ensure(args.data_dir)
    train, val = recipes.open_splits(
        root, args.train_split, args.val_split, args.seed, subset=args.subset,
        scale=args.scale, ignore_index=args.ignore_index, void_color=args.void_color,
        skip_bad=args.skip_bad, warn=lambda text: print(text, file=sys.stderr))
    args.crop_size, args.val_every, args.time_budget, chosen = recipes.fill_defaults(
        args.voc_root is not None, train, val, args.crop_size, args.val_every, args.time_budget)
    if chosen:
        print(chosen)
    tinyfcn.manual_seed(args.seed)
    if model is None:  # a new run (a resumed one brings its model)
        model = recipes.new_model(args.model, len(train.class_names), args.backbone,
                                  args.backbone_weights, args.init_from)
    steps = max(args.epochs * batches_per_epoch(len(train), args.batch_size), 1)
    opt, sched, summary = recipes.optimizer(
        model, args.recipe, args.optimizer, steps, args.batch_size * math.prod(args.crop_size),
        lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum,
        schedule=args.lr_schedule, warmup_steps=args.warmup,
        learn_upsampling=args.learn_upsampling)
    if summary:
        print(summary)
    settings = RunSettings(args.batch_size, args.seed, args.clip_grad,
                           class_weights(args, train), args.val_every, args.workers,
                           args.best_with_optimizer)
    trainer = Trainer(model, opt, sched, train, val, TrainAugment(tuple(args.crop_size)),
                      settings, out=args.out, loss_fn=args.loss, world=world, run=vars(args))
    if not args.resume and steps < 200:
        print(f"note: {len(train)} training images give only {steps} steps: a small set "
              f"learns with more steps and a gentle start, e.g. --epochs 60 --warmup 30 -b 2 "
              f"(measured in docs/training.md, 'Small data sets')")
    print(f"{type(model).__name__} ({model.config['backbone']}), "
          f"{sum(p.size for p in model.parameters()) / 1e6:.2f} M parameters; "
          f"{len(train)} train / {len(val)} val images of {root}; "
          f"{len(train.class_names)} classes", flush=True)
    return trainer


def namespace(run: dict) -> argparse.Namespace:
    return argparse.Namespace(**{k: Path(v) if k in PATHS and v is not None else v
                                 for k, v in run.items()})


def resumed_trainer(args, given, world) -> Trainer:
    """The run of --resume with the settings given anew (tinyfcn.train's policy)."""
    def build(run, model):
        return build_trainer(namespace({**vars(args), **run, "resume": args.resume,
                                        "init_from": None, "backbone_weights": None}),
                             world, model)  # the weights come from the checkpoint

    overrides = {k: getattr(args, k) for k in given - {"resume"}}
    return Trainer.from_checkpoint(args.resume, overrides, build,
                                   position=not args.eval_only, name=flag)


def run(args, given, world, started) -> int:
    try:
        if args.eval_only and not (args.resume or args.init_from):
            raise ValueError("--eval-only needs the weights to evaluate: give --resume or "
                             "--init-from a checkpoint")
        if args.resume:
            trainer = resumed_trainer(args, given, world)
            args = namespace(trainer.run)
        else:
            trainer = build_trainer(args, world)
        if args.eval_only:
            trainer.evaluate_and_write()
            print(f"Wrote eval.json, confusion.csv and plots to {trainer.out}/")
            return 0
        if trainer.epoch >= args.epochs:
            print(f"{args.resume} has already trained {trainer.epoch} of --epochs "
                  f"{args.epochs}: give a larger --epochs to train on")
            return 0
        history = trainer.fit(args.epochs, args.time_budget or None)
    except Interrupted as e:
        print(f"\nInterrupted by {e.signal_name} in epoch {e.epoch} after step {e.step}: "
              f"saved {e.checkpoint}; continue with --resume {e.checkpoint}")
        return 130
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (DataError, OutputError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    best = max((r for r in history if r["mean_iou"] == r["mean_iou"]),  # validated ones
               key=lambda r: r["mean_iou"], default=None)
    if best:
        print(f"\nDone in {(time.time() - started) / 60:.1f} min. Best val mIoU "
              f"{best['mean_iou']:.3f} (epoch {best['epoch']}); outputs in {trainer.out}/")
    return 0


def main(argv=None) -> int:
    args, given = parse_args(argv)
    tinyfcn.configure_runtime()
    started = time.time()
    try:
        world = World.from_environment()
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if world.size > 1:
        tinyfcn.set_threads(1)  # under mpiexec each rank computes on one core
        if not world.is_root:  # rank 0 alone prints and writes
            sys.stdout = open(os.devnull, "w")
    try:
        code = run(args, given, world, started)
    except BaseException:
        if world.size == 1:
            raise
        traceback.print_exc()
        code = 1
    if code in (1, 2):
        world.abort(code)  # a rank that fails ends every rank now, not at a timeout
    return code


if __name__ == "__main__":
    sys.exit(main())
