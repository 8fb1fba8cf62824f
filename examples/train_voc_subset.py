"""Train an FCN on a PASCAL VOC-layout data set; with no arguments, on the built-in one.

    python examples/train_voc_subset.py                       # FCN-8s-lite, built-in data
    python examples/train_voc_subset.py --model fcn32s        # the coarse sibling
    python examples/train_voc_subset.py --voc-root ~/VOCdevkit/VOC2012 --subset 200

Writes to --out: metrics.json (one record per epoch), checkpoint-last.npz,
checkpoint-best.npz (by validation mIoU), predictions/ (image | ground truth |
prediction) and training-curve.png. Ctrl-C saves checkpoint-last.npz; --resume
continues exactly where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import tinyfcn
import tinyfcn.functional as F
from tinyfcn import models, optim
from tinyfcn.data import DataError, VOCSegmentation, synthetic, write_image
from tinyfcn.data.check import find_bad
from tinyfcn.data.loader import batches_per_epoch, epoch_batches, subset_ids
from tinyfcn.data.transforms import TrainAugment, resize
from tinyfcn.data.visualize import panel, prediction_row, training_curve
from tinyfcn.metrics import confusion_matrix, scores
from tinyfcn.nn.utils import clip_grad_norm_, grad_norm
from tinyfcn.serialization import atomic_write

PREVIEW_IMAGES = 4


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Train an FCN (FCN-32s/16s/8s or DeconvNet) for semantic segmentation on "
                    "a PASCAL VOC-layout data set. With no arguments it trains FCN-8s-lite on "
                    "the built-in generated data set (no download) in a few minutes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--voc-root", type=Path, help="a VOC-layout folder (JPEGImages/, "
                      "SegmentationClass/, ImageSets/Segmentation/); default: the built-in set")
    data.add_argument("--data-dir", type=Path, default=None,
                      help="where the built-in data set is generated and cached "
                           f"(default {synthetic.default_root()})")
    data.add_argument("--train-split", default="train", help="split file name for training")
    data.add_argument("--val-split", default="val", help="split file name for validation")
    data.add_argument("--subset", type=int, help="use N images of each split, chosen "
                      "reproducibly from the seed")
    data.add_argument("--skip-bad", action="store_true",
                      help="check every image first; warn about and skip bad files instead "
                           "of stopping")
    data.add_argument("--scale", type=float, default=1.0,
                      help="resize every image (and label) by this factor first")
    data.add_argument("--crop-size", type=int, nargs=2, default=(96, 96), metavar=("H", "W"),
                      help="training crop (random scale 0.75-1.25, crop, flip)")
    model = p.add_argument_group("model")
    model.add_argument("--model", default="fcn8s", choices=sorted(models.MODELS))
    model.add_argument("--backbone", default="lite", choices=["lite", "vgg16"],
                       help="lite: the CPU-sized VGG; vgg16: FCN's own network")
    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=11)
    train.add_argument("--time-budget", type=float, default=330, metavar="SECONDS",
                       help="stop training after this many seconds (then validate and save); "
                            "0 for no limit")
    train.add_argument("-b", "--batch-size", type=int, default=4)
    train.add_argument("--optimizer", default="adam", choices=["sgd", "adam"])
    train.add_argument("--lr", type=float, default=None,
                       help="base learning rate, decayed by the poly schedule "
                            "(default 1e-3 for adam, 0.01 for sgd)")
    train.add_argument("--clip-grad", type=float, default=None, metavar="NORM",
                       help="scale gradients down to this global L2 norm")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", type=Path, default=Path("runs/latest"),
                       help="output folder")
    train.add_argument("--resume", type=Path, metavar="PATH",
                       help="continue a run from its checkpoint: weights, optimizer, epoch "
                            "and random state")
    train.add_argument("--init-from", type=Path, metavar="PATH",
                       help="start fresh from the weights of a checkpoint whose names and "
                            "shapes match (staged training: 32s -> 16s -> 8s)")
    train.add_argument("--eval-only", action="store_true",
                       help="only validate the model of --resume / --init-from")
    args = p.parse_args(argv)
    if args.lr is None:
        args.lr = 1e-3 if args.optimizer == "adam" else 0.01
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.crop_size) < 1 or args.scale <= 0:
        p.error("--crop-size and --scale must be positive")
    return args


class Interrupted(Exception):
    pass


def _raise_interrupt(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def load_data(args):
    if args.voc_root is None:
        print("Preparing the built-in data set ...", flush=True)
        root = synthetic.ensure(args.data_dir)
    else:
        root = args.voc_root
    train = VOCSegmentation(root, args.train_split)
    val = VOCSegmentation(root, args.val_split)
    if train.class_names != val.class_names:
        raise DataError(f"{root}: train and val splits disagree on class names")
    if args.scale != 1.0:
        train.transform = val.transform = lambda im, lab: resize(im, lab, args.scale)
    train_ids = subset_ids(len(train), args.subset, args.seed)
    val_ids = subset_ids(len(val), args.subset, args.seed + 1)
    if args.skip_bad:
        train_ids, val_ids = drop_bad(train, train_ids), drop_bad(val, val_ids)
    return root, train, val, train_ids, val_ids


def drop_bad(dataset, ids):
    """The ids whose files read correctly; one warning per bad file."""
    good, bad = find_bad(Subset(dataset, ids))
    for _, message in bad:
        print(f"warning: skipping {message}", file=sys.stderr)
    if bad:
        print(f"Skipped {len(bad)} bad file(s) of split {dataset.split}", file=sys.stderr)
    if not good:
        raise DataError(f"{dataset.root}: no readable images in split {dataset.split}")
    return ids[good]


class Subset:
    def __init__(self, dataset, ids):
        self.dataset, self.ids = dataset, ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return self.dataset[int(self.ids[i])]


def evaluate(model, dataset, ids, num_classes):
    """Confusion-matrix scores over whole validation images, and a few preview rows."""
    model.eval()
    hist = np.zeros((num_classes, num_classes), np.int64)
    previews = []
    with tinyfcn.no_grad():
        for k, i in enumerate(ids):
            image, label = dataset[int(i)]
            pred = model(model.preprocess(image)).data[0].argmax(0)
            hist += confusion_matrix(label, pred, num_classes)
            if k < PREVIEW_IMAGES:
                previews.append(prediction_row(image, label, pred.astype(np.uint8)))
    model.train()
    return scores(hist, list(dataset.class_names)), previews


def print_table(record, class_names):
    print(f"\nepoch {record['epoch']:>3}  train loss {record['train_loss']:.4f}  "
          f"({record['seconds']:.0f} s)")
    print(f"  {'pixel acc':>10} {'mean acc':>10} {'mean IoU':>10} {'fw IoU':>10}")
    print(f"  {record['pixel_acc']:>10.3f} {record['mean_acc']:>10.3f} "
          f"{record['mean_iou']:>10.3f} {record['fw_iou']:>10.3f}")
    cells = [f"{name[:18]:<18} {'  -  ' if math.isnan(v) else f'{v:.3f}'}"
             for name, v in record["per_class_iou"].items()]
    for start in range(0, len(cells), 3):
        print("  " + "   ".join(cells[start:start + 3]))
    sys.stdout.flush()


def save_checkpoint(path, model, opt, sched, state, class_names):
    tinyfcn.save({"config": model.config, "class_names": list(class_names),
                  "model": model.state_dict(), "optimizer": opt.state_dict(),
                  "scheduler": sched.state_dict(), "rng": tinyfcn.get_rng_state(),
                  **state}, path)


def build_optimizer(args, model, total_steps):
    if args.optimizer == "adam":
        opt = optim.Adam(model.parameters(), lr=args.lr)
    else:
        opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    return opt, optim.PolyLR(opt, total_steps)


def init_from(model, path):
    ckpt = tinyfcn.load(path)
    weights = ckpt.get("model", ckpt)  # a tinyfcn checkpoint, or a plain state dict (.pth)
    own = model.state_dict()
    matching = {k: v for k, v in weights.items() if k in own and np.shape(v) == own[k].shape}
    model.load_state_dict(matching, strict=False)
    print(f"Initialised {len(matching)} of {len(own)} parameter arrays from {path}")


def train_epoch(args, model, opt, sched, train, train_ids, augment, state, epoch,
                steps_per_epoch, deadline) -> int:
    """One epoch of steps from state["step_in_epoch"] on; `state` is kept current after
    every step (so an interruption saves the exact position). Non-zero on NaN/inf."""
    state["epoch_start"] = time.time()
    skip = state["step_in_epoch"]
    losses = state["epoch_losses"] = list(state["epoch_losses"])
    batches = epoch_batches(train, train_ids, args.batch_size, augment, args.seed, epoch,
                            skip=skip)
    with tqdm(batches, total=steps_per_epoch, initial=skip, desc=f"epoch {epoch}",
              unit="batch", leave=False, dynamic_ncols=True) as bar:
        for step, (images, labels) in enumerate(bar, start=skip + 1):
            t0 = time.time()
            opt.zero_grad()
            loss = F.cross_entropy(model(model.preprocess(images)), labels)
            loss.backward()
            norm = (clip_grad_norm_(model.parameters(), args.clip_grad) if args.clip_grad
                    else grad_norm(model.parameters()))
            problem = (f"loss is {float(loss.data)}" if not np.isfinite(loss.data) else
                       "gradients are not finite" if not math.isfinite(norm) else None)
            if problem:
                bar.close()
                print(f"error: {problem} at epoch {epoch}, step {step}; stopping. The last "
                      f"good checkpoint is kept in {args.out}.")
                return 1
            opt.step()
            sched.step()
            losses.append(float(loss.data))
            state["step_in_epoch"] = step
            bar.set_postfix(loss=f"{losses[-1]:.3f}",
                            img_s=f"{len(images) / (time.time() - t0):.1f}")
            if time.time() > deadline:
                break
    return 0


def save_epoch_outputs(out, model, opt, sched, state, class_names, result, previews):
    is_best = result["mean_iou"] > state["best_miou"]
    if is_best:
        state["best_miou"] = result["mean_iou"]
    save_checkpoint(out / "checkpoint-last.npz", model, opt, sched, state, class_names)
    if is_best:
        save_checkpoint(out / "checkpoint-best.npz", model, opt, sched, state, class_names)
    history_json = json.dumps(state["history"], indent=1).encode()
    atomic_write(out / "metrics.json", lambda f: f.write(history_json))
    write_image(out / "predictions" / f"epoch-{state['epoch']:03d}.png", panel(previews))
    training_curve(state["history"], out / "training-curve.png")


def run(args):
    root, train, val, train_ids, val_ids = load_data(args)
    class_names = train.class_names
    num_classes = len(class_names)
    tinyfcn.manual_seed(args.seed)
    # everything a resumed run needs to continue exactly (saved in every checkpoint)
    state = {"epoch": 0, "step_in_epoch": 0, "epoch_losses": [], "history": [],
             "best_miou": -1.0, "seed": args.seed, "epoch_start": 0.0}
    if args.resume:
        ckpt = tinyfcn.load(args.resume)
        model = models.from_checkpoint(ckpt, args.resume)
        if list(ckpt["class_names"]) != list(class_names):
            raise DataError(f"{args.resume}: checkpoint classes differ from the data set's")
    else:
        model = models.MODELS[args.model](num_classes, backbone=args.backbone)
    if args.init_from:
        init_from(model, args.init_from)
    steps_per_epoch = batches_per_epoch(len(train_ids), args.batch_size)
    if steps_per_epoch == 0 and not args.eval_only:
        raise DataError(f"{root}: {len(train_ids)} training images are fewer than one batch "
                        f"of {args.batch_size}")
    opt, sched = build_optimizer(args, model, max(args.epochs * steps_per_epoch, 1))
    if args.resume:
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        tinyfcn.set_rng_state(ckpt["rng"])
        state.update({k: ckpt[k] for k in state})
        print(f"Resuming {args.resume} at epoch {state['epoch'] + 1}, "
              f"step {state['step_in_epoch']}")
    args.out.mkdir(parents=True, exist_ok=True)

    print(f"{type(model).__name__} {model.config['model']} ({model.config['backbone']}), "
          f"{sum(p.size for p in model.parameters()) / 1e6:.2f} M parameters; "
          f"{len(train_ids)} train / {len(val_ids)} val images of {root}; "
          f"{num_classes} classes", flush=True)
    if args.eval_only:
        result, previews = evaluate(model, val, val_ids, num_classes)
        record = {"epoch": state["epoch"], "train_loss": float("nan"), **result, "seconds": 0.0}
        print_table(record, class_names)
        write_image(args.out / "predictions" / "eval.png", panel(previews))
        return 0

    augment = TrainAugment(args.crop_size)
    start_time = time.time()
    budget = args.time_budget or float("inf")
    try:
        for epoch in range(state["epoch"] + 1, args.epochs + 1):
            if train_epoch(args, model, opt, sched, train, train_ids, augment, state, epoch,
                           steps_per_epoch, start_time + budget) != 0:
                return 1
            result, previews = evaluate(model, val, val_ids, num_classes)
            record = {"epoch": epoch, "train_loss": float(np.mean(state["epoch_losses"]))
                      if state["epoch_losses"] else float("nan"),
                      **result, "seconds": time.time() - state["epoch_start"]}
            # one update, so an interruption never sees half of it
            state.update(epoch=epoch, step_in_epoch=0, epoch_losses=[],
                         history=state["history"] + [record])
            print_table(record, class_names)
            save_epoch_outputs(args.out, model, opt, sched, state, class_names, result,
                               previews)
            if time.time() - start_time > budget:
                print(f"Time budget of {args.time_budget:.0f} s reached after epoch {epoch}.")
                break
    except (KeyboardInterrupt, Interrupted) as e:
        save_checkpoint(args.out / "checkpoint-last.npz", model, opt, sched, state, class_names)
        print(f"\nInterrupted ({e or 'SIGINT'}) in epoch {state['epoch'] + 1} after step "
              f"{state['step_in_epoch']}: saved {args.out / 'checkpoint-last.npz'}; "
              f"continue with --resume")
        return 130
    best = max(state["history"], key=lambda r: r["mean_iou"], default=None)
    total = time.time() - start_time
    if best:
        print(f"\nDone in {total / 60:.1f} min. Best val mIoU {best['mean_iou']:.3f} "
              f"(epoch {best['epoch']}); outputs in {args.out}/")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return run(args)
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
