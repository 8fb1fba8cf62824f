"""Train an FCN on a PASCAL VOC-layout data set; with no arguments, on the built-in one.

    python examples/train_voc_subset.py                       # FCN-8s-lite, built-in data
    python examples/train_voc_subset.py --model fcn32s        # the coarse sibling
    python examples/train_voc_subset.py --voc-root ~/VOCdevkit/VOC2012 --subset 200

Writes to --out: metrics.json (one record per epoch), checkpoint-last.npz,
checkpoint-best.npz (by validation mIoU), predictions/ (image | ground truth |
prediction) and training-curve.png. Ctrl-C saves checkpoint-last.npz; --resume
continues exactly where it stopped. The loop itself is tinyfcn.train.Trainer;
this script parses arguments and wires the pieces together.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import tinyfcn
from tinyfcn import models, optim
from tinyfcn.data import DataError, VOCSegmentation, synthetic
from tinyfcn.data.check import without_bad_files
from tinyfcn.data.loader import Subset, subset_ids
from tinyfcn.data.stats import class_pixel_counts, median_frequency_weights
from tinyfcn.data.transforms import TrainAugment, resize
from tinyfcn.distributed import World
from tinyfcn.train import (
    Diverged,
    Interrupted,
    Trainer,
    init_from,
    print_table,
    reference_optimizer,
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one (not None, not a flag's False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Train an FCN (FCN-32s/16s/8s or DeconvNet) for semantic segmentation on "
                    "a PASCAL VOC-layout data set. With no arguments it trains FCN-8s-lite on "
                    "the built-in generated data set (no download) in a few minutes.",
        epilog="A data set: JPEGImages/<id>.jpg (.jpeg, .png), SegmentationClass/<id>.png, "
               "ImageSets/Segmentation/<split>.txt (one id per line) and class_names.txt (one "
               "class per line). A label image is a PNG of class indices (palette or "
               "greyscale; 255, or --ignore-index, marks void), or an RGB colour mask when "
               "palette.txt lists one 'R G B' line per class. Check one with "
               "tinyfcn-check-data ROOT.",
        formatter_class=HelpFormatter, allow_abbrev=False)
    data = p.add_argument_group("data")
    data.add_argument("--voc-root", type=Path, metavar="ROOT", help="a VOC-layout folder "
                      "(see below); without it, the built-in generated data set")
    data.add_argument("--data-dir", type=Path, default=synthetic.default_root(),
                      help="where the built-in data set is generated and cached")
    data.add_argument("--train-split", default="train", help="split file name for training")
    data.add_argument("--val-split", default="val", help="split file name for validation")
    data.add_argument("--subset", type=int, metavar="N", help="use N images of each split, chosen "
                      "reproducibly from the seed")
    data.add_argument("--skip-bad", action="store_true",
                      help="check every image first; warn about and skip bad files instead "
                           "of stopping")
    data.add_argument("--scale", type=float, default=1.0,
                      help="resize every image (and label) by this factor first")
    data.add_argument("--crop-size", type=int, nargs=2, default=(96, 96), metavar=("H", "W"),
                      help="training crop (random scale 0.75-1.25, crop, flip)")
    data.add_argument("--ignore-index", type=int, default=255, metavar="VALUE",
                      help="the label value that marks void (unlabelled) pixels")
    data.add_argument("--void-color", type=int, nargs=3, default=(0, 0, 0),
                      metavar=("R", "G", "B"), help="with colour masks (palette.txt): the "
                      "colour of void pixels, unless a class owns it")
    data.add_argument("--class-weights", default="none", metavar="none|auto|W1,W2,...",
                      help="weigh the loss per class: auto = median-frequency balancing from "
                           "the training split (for rare classes), or one weight per class")
    model = p.add_argument_group("model")
    model.add_argument("--model", default="fcn8s", choices=sorted(models.MODELS),
                       help="the architecture")
    model.add_argument("--backbone", default="lite", choices=["lite", "vgg16"],
                       help="lite: the CPU-sized VGG; vgg16: FCN's own network")
    model.add_argument("--backbone-weights", type=Path, metavar="PATH",
                       help="start from a trained VGG classifier of the same backbone "
                            "(.pth, .safetensors or .npz; torchvision's layout, e.g. "
                            "vgg16-397923af.pth, or examples/pretrain_classifier.py's): its "
                            "convs and its FC layers, convolutionalized into fc6 / fc7")
    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=11, help="epochs in all (a resumed run "
                       "counts the epochs it already did)")
    train.add_argument("--time-budget", type=float, default=330, metavar="SECONDS",
                       help="stop training after this many seconds (then validate and save); "
                            "0 for no limit")
    train.add_argument("-b", "--batch-size", type=int, default=4, help="images per step")
    train.add_argument("--optimizer", default="adam", choices=["sgd", "adam"],
                       help="the optimizer")
    train.add_argument("--lr", type=float, help="base learning rate (default: 1e-3 for "
                       "adam, 0.01 for sgd, the reference's for --recipe reference)")
    train.add_argument("--momentum", type=float, default=0.9, help="SGD's momentum")
    train.add_argument("--weight-decay", type=float, help="L2 weight decay (default: 5e-4 "
                       "for sgd, 0 for adam)")
    train.add_argument("--lr-schedule", default="poly", choices=sorted(optim.SCHEDULES),
                       help="how the learning rate falls over the run")
    train.add_argument("--warmup", type=int, default=0, metavar="STEPS",
                       help="raise the learning rate linearly over the first STEPS steps")
    train.add_argument("--recipe", default="default", choices=["default", "reference"],
                       help="reference: the paper's fine-tuning (SGD momentum 0.99, fixed lr, "
                            "biases at 2x lr without decay, upsampling frozen at bilinear)")
    train.add_argument("--learn-upsampling", action="store_true",
                       help="with --recipe reference: train the upsampling layers too")
    train.add_argument("--clip-grad", type=float, metavar="NORM",
                       help="scale gradients down to this global L2 norm")
    train.add_argument("--seed", type=int, default=0, help="seed of the data order, "
                       "augmentation and initialisation")
    train.add_argument("--out", type=Path, default=Path("runs/latest"), help="output folder")
    train.add_argument("--resume", type=Path, metavar="PATH",
                       help="continue a run from its checkpoint: weights, optimizer, epoch "
                            "and random state")
    train.add_argument("--init-from", type=Path, metavar="PATH",
                       help="start fresh from the weights of a checkpoint whose names and "
                            "shapes match (staged training: 32s -> 16s -> 8s)")
    train.add_argument("--val-every", type=int, default=1, metavar="N",
                       help="validate every N epochs (and after the last)")
    train.add_argument("--workers", type=int, default=0, metavar="N", help="threads that read and "
                       "augment the next batches during a step (the same batches either way)")
    train.add_argument("--eval-only", action="store_true",
                       help="only validate the model of --resume / --init-from: writes "
                            "eval.json, confusion.csv, per-class-iou.png, confusion.png")
    train.add_argument("--best-with-optimizer", action="store_true",
                       help="keep the optimizer state in checkpoint-best.npz too (resumable, "
                            "about 3x larger); by default it holds the weights only")
    args = p.parse_args(argv)
    tokens = sys.argv[1:] if argv is None else argv
    given = {a.dest for a in p._actions if any(t == o or t.startswith(o + "=") for t in tokens
                                                for o in a.option_strings)}
    return args, given  # and the options the command line gave


# a resumed run takes its arguments from its checkpoint; these may be given anew
CHANGEABLE_ON_RESUME = {"epochs", "time_budget", "out", "eval_only", "skip_bad"}
PATHS = {"voc_root", "data_dir", "out"}


def continue_run(args, given: set, stored: dict):
    """`args` with the checkpoint's run arguments wherever the command line gave none;
    refuses an option given anew that would change the run (other than the above)."""
    def plain(value):
        return json.loads(json.dumps(value, default=str))

    differ = [f"--{k.replace('_', '-')} {plain(getattr(args, k))} (the run's: {v})"
              for k, v in stored.items() if k in given and k not in CHANGEABLE_ON_RESUME
              and k in vars(args) and k != "resume" and plain(getattr(args, k)) != plain(v)]
    if differ:
        raise ValueError(f"{args.resume} continues a run with other settings: "
                         + "; ".join(differ) + " (leave them out, or start a new run)")
    for key, value in stored.items():
        if key in vars(args) and key not in given and key != "resume":
            setattr(args, key, Path(value) if key in PATHS and value is not None else value)
    args.init_from = args.backbone_weights = None  # the weights come from the checkpoint
    changed = sorted(k for k in given & CHANGEABLE_ON_RESUME if plain(getattr(args, k))
                     != plain(stored.get(k)))
    for key in changed:
        print(f"--{key.replace('_', '-')} {plain(getattr(args, key))} "
              f"(the run had {plain(stored.get(key))})")
    return args


def check_args(args):
    if args.eval_only and not (args.resume or args.init_from):
        raise ValueError("--eval-only needs the weights to evaluate: give --resume or "
                         "--init-from a checkpoint")
    if args.lr is None and args.recipe == "default":
        args.lr = 1e-3 if args.optimizer == "adam" else 0.01
    if args.epochs < 1 or args.batch_size < 1:
        raise ValueError("--epochs and --batch-size must be >= 1")
    if min(args.crop_size) < 1 or args.scale <= 0:
        raise ValueError("--crop-size and --scale must be positive")
    if args.clip_grad is not None and args.clip_grad <= 0:
        raise ValueError("--clip-grad must be a positive norm")
    if args.val_every < 1 or args.workers < 0 or args.warmup < 0:
        raise ValueError("--val-every must be >= 1, --workers and --warmup >= 0")


def class_weights(args, train):
    """None, or one loss weight per class (printed as a table)."""
    if args.class_weights == "none":
        return None
    names = train.class_names
    if args.class_weights == "auto":
        pixels, present_in = class_pixel_counts(train, len(names))
        weights = median_frequency_weights(pixels, present_in)
        shares = pixels / max(pixels.sum(), 1)
    else:
        try:
            weights = np.array([float(w) for w in args.class_weights.split(",")], np.float32)
        except ValueError:
            raise ValueError(f"--class-weights {args.class_weights!r}: expected none, auto or "
                             f"numbers separated by commas") from None
        if len(weights) != len(names) or (weights < 0).any():
            raise ValueError(f"--class-weights needs {len(names)} non-negative weights, one "
                             f"per class, got {len(weights)}")
        shares = np.full(len(names), np.nan)
    print(f"  {'class':<20} {'pixels':>8} {'weight':>8}")
    for name, share, weight in zip(names, shares, weights):
        print(f"  {name[:20]:<20} {'-' if np.isnan(share) else f'{share:.2%}':>8} "
              f"{weight:>8.3f}")
    return weights


def load_split(args, root, split, seed):
    dataset = VOCSegmentation(root, split, ignore_index=args.ignore_index,
                              void_colour=tuple(args.void_color))
    if args.scale != 1.0:
        dataset.transform = lambda im, lab: resize(im, lab, args.scale)
    ids = subset_ids(len(dataset), args.subset, seed)
    if not args.skip_bad:
        return Subset(dataset, ids)
    subset, bad = without_bad_files(dataset, ids)
    for message in bad:
        print(f"warning: skipping {message}", file=sys.stderr)
    if bad:
        print(f"Skipped {len(bad)} bad file(s) of split {split}", file=sys.stderr)
    if not len(subset):
        raise DataError(f"{root}: no readable images in split {split}")
    return subset


def make_optimizer(args, model, steps):
    if args.recipe == "reference":
        pixels = args.batch_size * args.crop_size[0] * args.crop_size[1]
        opt, sched, lr = reference_optimizer(model, args.model, pixels, steps, args.lr,
                                             args.learn_upsampling)
        print(f"Reference recipe: SGD momentum 0.99, fixed lr {lr:.3g} (the reference's rate "
              f"for its summed loss x {pixels} pixels per batch), biases at 2x lr without "
              f"decay, upsampling {'learned' if args.learn_upsampling else 'frozen'}")
        return opt, sched
    if args.optimizer == "adam":
        opt = optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay or 0)
    else:
        decay = 5e-4 if args.weight_decay is None else args.weight_decay
        opt = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                        weight_decay=decay)
    return opt, optim.SCHEDULES[args.lr_schedule](opt, steps, warmup_steps=args.warmup)


def build_trainer(args, world) -> Trainer:
    if args.voc_root is None:
        print("Preparing the built-in data set ...", flush=True)
        if world.is_root:
            synthetic.ensure(args.data_dir)
        world.sum_(np.zeros(1), "preparing the data set")  # the others wait for rank 0
        root = synthetic.ensure(args.data_dir)
    else:
        root = args.voc_root
    train = load_split(args, root, args.train_split, args.seed)
    val = load_split(args, root, args.val_split, args.seed + 1)
    if train.class_names != val.class_names:
        raise DataError(f"{root}: train and val splits disagree on class names")
    if not train.dataset.has_class_names:
        print(f"warning: {root / 'class_names.txt'} is missing: assuming PASCAL VOC's 21 "
              f"classes (write the file, one name per line, for any other set)", file=sys.stderr)
    tinyfcn.manual_seed(args.seed)
    if args.resume:
        model = models.from_checkpoint(tinyfcn.load(args.resume), args.resume)
    else:
        model = models.MODELS[args.model](len(train.class_names), backbone=args.backbone)
    if args.backbone_weights:
        if not isinstance(model, models.FCN):
            raise ValueError("--backbone-weights needs an FCN model (fcn32s, fcn16s, fcn8s)")
        copied = model.copy_params_from_vgg16(args.backbone_weights)
        print(f"Copied {len(copied)} arrays of {args.backbone_weights} into conv1_1 ... fc7")
    if args.init_from:
        copied, total = init_from(model, args.init_from)
        print(f"Initialised {copied} of {total} parameter arrays from {args.init_from}")
    opt, sched = make_optimizer(args, model, max(args.epochs * (len(train) // args.batch_size), 1))
    trainer = Trainer(model, opt, sched, train, val,
                      TrainAugment(args.crop_size), batch_size=args.batch_size,
                      seed=args.seed, out=args.out, clip_grad=args.clip_grad,
                      class_weights=class_weights(args, train),
                      best_with_optimizer=args.best_with_optimizer, val_every=args.val_every,
                      workers=args.workers, world=world, run=vars(args))
    if not args.resume and args.epochs * trainer.steps_per_epoch < 200:
        print(f"note: {len(train)} training images give only "
              f"{args.epochs * trainer.steps_per_epoch} steps: a small set learns with more "
              f"steps and a gentle start, e.g. --epochs 60 --warmup 30 -b 2 (12 built-in "
              f"images: mIoU 0.044 with the defaults, 0.116 so)")
    if args.resume and not args.eval_only:
        trainer.resume(args.resume)
        print(f"Resuming {args.resume} at epoch {trainer.epoch + 1}, "
              f"step {trainer.step_in_epoch}")
        total = max(args.epochs * trainer.steps_per_epoch, 1)
        if sched.total_steps != total:  # more (or fewer) --epochs than the run had
            sched.set_total_steps(total)
            print(f"Learning-rate schedule now spans {total} steps (lr {opt.lr:.3g})")
    print(f"{type(model).__name__} ({model.config['backbone']}), "
          f"{sum(p.size for p in model.parameters()) / 1e6:.2f} M parameters; "
          f"{len(train)} train / {len(val)} val images of {root}; "
          f"{len(train.class_names)} classes", flush=True)
    return trainer


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
        if args.resume:
            args = continue_run(args, given, tinyfcn.load(args.resume).get("run", {}))
        check_args(args)
        trainer = build_trainer(args, world)
        if trainer.epoch >= args.epochs and not args.eval_only:
            print(f"{args.resume} has already trained {trainer.epoch} of --epochs "
                  f"{args.epochs}: give a larger --epochs to train on")
            return 0
        if args.eval_only:
            result, picture = trainer.evaluate()
            print_table({"epoch": trainer.epoch, "train_loss": float("nan"), **result,
                         "seconds": 0.0})
            trainer.folder.write_evaluation(result, trainer.confusion, trainer.class_names,
                                            picture)
            print(f"Wrote eval.json, confusion.csv and plots to {args.out}/")
            return 0
        history = trainer.fit(args.epochs, args.time_budget or None)
    except Interrupted as e:
        print(f"\nInterrupted by {e.signal_name} in epoch {e.epoch} after step {e.step}: "
              f"saved {e.checkpoint}; continue with --resume {e.checkpoint}")
        return 130
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (DataError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    best = max((r for r in history if r["mean_iou"] == r["mean_iou"]),  # validated ones
               key=lambda r: r["mean_iou"], default=None)
    if best:
        print(f"\nDone in {(time.time() - started) / 60:.1f} min. Best val mIoU "
              f"{best['mean_iou']:.3f} (epoch {best['epoch']}); outputs in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
