"""`Trainer`: fit a segmentation model, validate it every epoch, save what a run leaves
behind, and resume exactly where an interrupted run stopped.

A run folder (`out`) holds metrics.json (one record per epoch), checkpoint-last.npz,
checkpoint-best.npz (by validation mIoU), predictions/epoch-NNN.png (image | ground
truth | prediction) and training-curve.png.

The training checkpoint is defined here, beside the code that reads it back:

    version        CHECKPOINT_VERSION
    config         the model's config (models.build rebuilds it; models.from_checkpoint
                   loads it with its weights, for prediction)
    class_names    the data set's classes, in label order
    model          the state dict
    optimizer      {"type": "SGD" | "Adam", "state": its state dict} (absent in a
                   weights-only checkpoint)
    scheduler      the learning-rate schedule's state dict
    position       {"epoch": epochs finished, "step_in_epoch": steps of the next one
                   done, "epoch_losses": their losses}
    history        the per-epoch records of metrics.json
    best_miou      the best validation mIoU so far
    seed           the seed of the data order and augmentation
    batch_size     the batch size the data order depends on
    rng            tinyfcn's random state (dropout)
    run            free-form settings of whoever drove the run (the script's arguments)
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tinyfcn import functional as F
from tinyfcn import random
from tinyfcn._runtime import configure_runtime
from tinyfcn.data.loader import batches_per_epoch, epoch_batches
from tinyfcn.data.visualize import class_legend, panel, prediction_row
from tinyfcn.distributed import World, flat_gradients, set_flat_gradients
from tinyfcn.metrics import confusion_matrix, scores
from tinyfcn.nn import ConvTranspose2d
from tinyfcn.nn.utils import clip_grad_norm_, grad_norm
from tinyfcn.optim import SGD, ConstantLR
from tinyfcn.report import RunFolder, versions
from tinyfcn.serialization import load, save

CHECKPOINT_VERSION = 2
PREVIEW_IMAGES = 4


class Interrupted(Exception):
    """Training stopped by Ctrl-C or SIGTERM; checkpoint-last.npz holds the exact position."""

    def __init__(self, signal_name: str, epoch: int, step: int, checkpoint: Path):
        super().__init__(f"interrupted by {signal_name} in epoch {epoch} after step {step}")
        self.signal_name, self.epoch, self.step, self.checkpoint = (signal_name, epoch, step,
                                                                    checkpoint)


class Diverged(Exception):
    """The loss or the gradients stopped being finite; the last good checkpoint is kept."""


class _Signal(Exception):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)


@contextlib.contextmanager
def _handling_signals(handler):
    """SIGINT and SIGTERM go to `handler` inside this block (in the main thread only: no
    other thread may install handlers, and there the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _signals_raise():
    """SIGINT and SIGTERM raise `_Signal` inside this block."""
    def handler(signum, frame):
        raise _Signal(signum)
    return _handling_signals(handler)


def _signals_recorded(received: list):
    """SIGINT and SIGTERM are appended to `received` (data-parallel training: the ranks
    agree at the next step and stop together)."""
    return _handling_signals(lambda signum, frame: received.append(signum))


@contextlib.contextmanager
def _signals_deferred():
    """A signal that arrives inside this block is raised when it ends, so the block (an
    optimizer step with its bookkeeping) is never left half done."""
    pending = []
    with _handling_signals(lambda signum, frame: pending.append(signum)):
        yield
    if pending:
        raise _Signal(pending[0])


class Trainer:
    """Train `model` on `train_set` with `optimizer` and `scheduler` (stepped once per batch),
    validating on `val_set` after every epoch. Data sets are indexable collections of
    (uint8 image (H, W, 3), uint8 label (H, W)) with `class_names`; `augment(image, label,
    rng)` makes a training sample (crop, flip, scale), seeded per batch so that a resumed
    run sees exactly the data it would have seen."""

    def __init__(self, model, optimizer, scheduler, train_set, val_set, augment, *,
                 batch_size: int = 4, seed: int = 0, out="runs/latest", clip_grad=None,
                 class_weights=None, best_with_optimizer: bool = False, val_every: int = 1,
                 workers: int = 0, world: World | None = None, run: dict | None = None,
                 log=print, progress: bool = True):
        self.world = world or World()
        if batch_size < 1 or batch_size % self.world.size:
            raise ValueError(f"batch_size must be a positive multiple of the {self.world.size} "
                             f"ranks, got {batch_size}")
        if val_every < 1 or workers < 0:
            raise ValueError(f"val_every must be >= 1 and workers >= 0, got {val_every}, "
                             f"{workers}")
        self.val_every, self.workers = val_every, workers
        if clip_grad is not None and not clip_grad > 0:
            raise ValueError(f"clip_grad must be a positive norm, got {clip_grad}")
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.train_set, self.val_set, self.augment = train_set, val_set, augment
        self.batch_size, self.seed, self.clip_grad = batch_size, seed, clip_grad
        self.out = Path(out)
        self.log = log if self.world.is_root else (lambda text: None)
        self.progress = progress and self.world.is_root  # tqdm bars for epochs and validation
        self.folder = RunFolder(out, enabled=self.world.is_root)
        self.best_with_optimizer = best_with_optimizer
        self._signals: list = []  # signals received, data-parallel runs act on them together
        self.confusion = None  # of the latest evaluation
        self.run = {k: str(v) if isinstance(v, Path) else v for k, v in (run or {}).items()}
        self.class_names = list(train_set.class_names)
        self.colours = getattr(train_set, "palette", None)
        self.class_weights = None if class_weights is None else np.asarray(class_weights,
                                                                           np.float32)
        if self.class_weights is not None and self.class_weights.shape != (
                len(self.class_names),):
            raise ValueError(f"class_weights must hold one weight per class "
                             f"({len(self.class_names)}), got {self.class_weights.shape}")
        self.epoch, self.step_in_epoch, self.epoch_losses = 0, 0, []
        self.history: list = []
        self.best_miou = -1.0

    @property
    def steps_per_epoch(self) -> int:
        return batches_per_epoch(len(self.train_set), self.batch_size)

    # --------------------------------------------------------------- checkpoint
    def state_dict(self, with_optimizer: bool = True) -> dict:
        state = {"version": CHECKPOINT_VERSION, "config": self.model.config,
                 "class_names": self.class_names, "model": self.model.state_dict(),
                 "scheduler": self.scheduler.state_dict(),
                 "position": {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                              "epoch_losses": list(self.epoch_losses)},
                 "history": self.history, "best_miou": self.best_miou, "seed": self.seed,
                 "batch_size": self.batch_size, "rng": random.get_rng_state(),
                 "run": self.run, "versions": versions(),
                 "palette": None if self.colours is None else np.asarray(self.colours)}
        if with_optimizer:
            state["optimizer"] = {"type": type(self.optimizer).__name__,
                                  "state": self.optimizer.state_dict()}
        return state

    def load_state_dict(self, state: dict, source="checkpoint") -> None:
        """Continue from `state` (what `state_dict` gave); refuses one from another run."""
        if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{source}: not a training checkpoint of this tinyfcn (version "
                             f"{state.get('version') if isinstance(state, dict) else None}, "
                             f"expected {CHECKPOINT_VERSION}); its weights still load "
                             f"with --init-from")
        if "optimizer" not in state:
            raise ValueError(f"{source} holds weights only (no optimizer state): it cannot "
                             f"be resumed; start from it with --init-from")
        expected = {"model": self.model.config, "class names": self.class_names,
                    "optimizer": type(self.optimizer).__name__, "batch size": self.batch_size}
        saved = {"model": state["config"], "class names": list(state["class_names"]),
                 "optimizer": state["optimizer"]["type"], "batch size": state["batch_size"]}
        differ = [f"{k} {saved[k]!r} (this run: {expected[k]!r})"
                  for k in expected if saved[k] != expected[k]]
        if differ:
            raise ValueError(f"{source} is from another run: " + "; ".join(differ))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"]["state"])
        self.scheduler.load_state_dict(state["scheduler"])
        random.set_rng_state(state["rng"])
        position = state["position"]
        self.epoch, self.step_in_epoch = int(position["epoch"]), int(position["step_in_epoch"])
        self.epoch_losses = [float(v) for v in position["epoch_losses"]]
        self.history, self.best_miou = list(state["history"]), float(state["best_miou"])
        self.seed = int(state["seed"])

    def resume(self, path) -> None:
        self.load_state_dict(load(path), path)

    def save(self, path, with_optimizer: bool = True) -> None:
        if self.world.is_root:  # one writer in data-parallel training
            save(self.state_dict(with_optimizer), path)

    # ----------------------------------------------------------------- training
    def fit(self, epochs: int, time_budget: float | None = None) -> list:
        """Train until `epochs` epochs are done (counting those of a resumed run) or
        `time_budget` seconds have passed; validate and save after every epoch. Returns
        the history. Raises `Interrupted` (after saving checkpoint-last.npz) on Ctrl-C or
        SIGTERM and `Diverged` on a non-finite loss or gradient.

        Training is one of tinyfcn's entry points: it applies `configure_runtime()`
        (a no-op with TINYFCN_DEFAULT_RUNTIME=1; see the README's "Speed settings")."""
        configure_runtime()
        self.world.check_same("the run (model, classes, data, batch, seed, position)", {
            "model": self.model.config, "classes": self.class_names, "seed": self.seed,
            "batch": self.batch_size, "data": [len(self.train_set), len(self.val_set)],
            "position": [self.epoch, self.step_in_epoch]})
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(self.train_set)} training images are fewer than one "
                             f"batch of {self.batch_size}")
        self.folder.start({"run": self.run, "model": self.model.config,
                           "class_names": self.class_names, "batch_size": self.batch_size,
                           "seed": self.seed, "class_weights": None if self.class_weights
                           is None else self.class_weights.tolist()},
                          self.epoch, self.step_in_epoch)
        deadline = time.time() + time_budget if time_budget else math.inf
        signals = _signals_raise() if self.world.size == 1 else _signals_recorded(self._signals)
        try:
            with signals:
                for epoch in range(self.epoch + 1, epochs + 1):
                    started = time.time()
                    finished = self.train_one_epoch(epoch, deadline)
                    late = self._deadline_passed(deadline)
                    last = not finished or epoch == epochs or late
                    self._end_epoch(epoch, finished, time.time() - started,
                                    validate=last or epoch % self.val_every == 0)
                    if not finished or late:
                        self.log(f"Time budget of {time_budget:.0f} s reached in epoch {epoch}.")
                        break
        except (KeyboardInterrupt, _Signal) as e:
            name = "SIGINT" if isinstance(e, KeyboardInterrupt) else str(e)
            path = self.out / "checkpoint-last.npz"
            try:
                with _signals_deferred():
                    self.save(path)
            except _Signal:
                pass  # a second Ctrl-C during the save: the save has finished; stop all the same
            raise Interrupted(name, self.epoch + 1, self.step_in_epoch, path) from None
        return self.history

    def train_one_epoch(self, epoch: int, deadline: float = math.inf) -> bool:
        """The steps of `epoch` from the current position on; True if the epoch finished,
        False if the deadline stopped it (the position is kept for a resume)."""
        skip = self.step_in_epoch
        batches = epoch_batches(self.train_set, np.arange(len(self.train_set)),
                                self.batch_size, self.augment, self.seed, epoch, skip=skip,
                                workers=self.workers, part=(self.world.rank, self.world.size))
        with tqdm(batches, total=self.steps_per_epoch, initial=skip, desc=f"epoch {epoch}",
                  unit="batch", leave=False, dynamic_ncols=True,
                  disable=not self.progress) as bar:
            for step, (images, labels) in enumerate(bar, start=skip + 1):
                started, lr = time.time(), self.optimizer.lr
                loss = self.train_step(images, labels, epoch, step, bar)
                seconds = time.time() - started
                self.folder.log_step(epoch, step, loss, lr, seconds, len(images))
                bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{len(images) / seconds:.1f}")
                if step < self.steps_per_epoch and self._deadline_passed(deadline):
                    return False
        return True

    def _deadline_passed(self, deadline: float) -> bool:
        """Rank 0's clock decides for every rank (they must stop at the same step)."""
        late = np.array([float(self.world.is_root and time.time() > deadline)])
        return bool(self.world.sum_(late, "the time budget")[0])

    def train_step(self, images, labels, epoch: int, step: int, bar=None) -> float:
        model, opt = self.model, self.optimizer
        opt.zero_grad()
        if self.world.size == 1:
            loss = F.cross_entropy(model(model.preprocess(images)), labels,
                                   weight=self.class_weights)
            loss.backward()
            value = float(loss.data)
        else:
            value = self._data_parallel_backward(images, labels)
        norm = (clip_grad_norm_(model.parameters(), self.clip_grad) if self.clip_grad
                else grad_norm(model.parameters()))
        problem = (f"loss is {value}" if not math.isfinite(value) else
                   "gradients are not finite" if not math.isfinite(norm) else None)
        if problem:
            if bar is not None:
                bar.close()
            raise Diverged(f"{problem} at epoch {epoch}, step {step}; the last good "
                           f"checkpoint is kept in {self.out}")
        # the update and its bookkeeping: all or nothing (data-parallel runs only record
        # signals and act on them together at the next step)
        with _signals_deferred() if self.world.size == 1 else contextlib.nullcontext():
            opt.step()
            self.scheduler.step()
            self.epoch_losses.append(value)
            self.step_in_epoch = step
        return value

    def _data_parallel_backward(self, images, labels) -> float:
        """This rank's share of the global batch: the loss is normalised by the global
        weight of the valid pixels (not a mean of means), so the summed gradients are the
        single-process gradient. Returns the global mean loss. A signal on any rank stops
        every rank here, before the step."""
        valid = labels != 255
        weight = (self.class_weights[labels[valid]].sum() if self.class_weights is not None
                  else valid.sum())
        shared = self.world.sum_(np.array([weight, float(bool(self._signals))]),
                                 "the step's pixel count")
        if shared[1]:
            raise _Signal(self._signals[0] if self._signals else signal.SIGINT)
        logits = self.model(self.model.preprocess(images))
        loss_sum = F.cross_entropy(logits, labels, weight=self.class_weights, reduction="sum")
        (loss_sum * logits.dtype.type(1 / max(shared[0], 1e-30))).backward()
        params = self.optimizer.params
        flat = flat_gradients(params, extra=float(loss_sum.data))  # the loss rides along
        self.world.sum_(flat, "the gradients")
        set_flat_gradients(params, flat[:-1])
        return float(flat[-1]) / max(shared[0], 1e-30)

    def _end_epoch(self, epoch: int, finished: bool, seconds: float, validate=True) -> None:
        """Validate (unless told not to), record, print and save; a partial epoch is recorded
        (and replaced once a resumed run finishes it) but the position stays inside it."""
        if validate:
            result, picture = self.evaluate()
        else:  # recorded with the training loss alone
            result = {k: float("nan") for k in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")}
            result["per_class_iou"] = {name: float("nan") for name in self.class_names}
        record = {"epoch": epoch, "train_loss": float(np.mean(self.epoch_losses))
                  if self.epoch_losses else float("nan"), **result, "seconds": seconds}
        if not finished:
            record["steps"] = self.step_in_epoch
        history = [r for r in self.history if r["epoch"] != epoch] + [record]
        is_best = result["mean_iou"] > self.best_miou
        with _signals_deferred():
            self.history = history
            if finished:
                self.epoch, self.step_in_epoch, self.epoch_losses = epoch, 0, []
            if is_best:
                self.best_miou = result["mean_iou"]
        self.save(self.out / "checkpoint-last.npz")
        if not validate:
            self.log(f"epoch {epoch:>3}  train loss {record['train_loss']:.4f}  "
                     f"({seconds:.0f} s; validated every {self.val_every} epochs)")
            self.folder.write_history(self.history)
            return
        print_table(record, self.log)
        if is_best:
            self.save(self.out / "checkpoint-best.npz", self.best_with_optimizer)
        self.folder.log_validation(record)
        self.folder.write_epoch(self.history, result, self.confusion, self.class_names,
                                picture, epoch)

    # --------------------------------------------------------------- evaluation
    def evaluate(self, data=None) -> tuple[dict, np.ndarray]:
        """Scores over the whole images of `data` (default: the validation set), and a
        picture of the first few: image | ground truth | prediction, with a legend."""
        data = self.val_set if data is None else data
        n = len(self.class_names)
        hist = np.zeros((n, n), np.int64)
        rows, shown = [], []
        for i in tqdm(range(self.world.rank, len(data), self.world.size), desc="validation",
                      unit="image", leave=False, dynamic_ncols=True,
                      disable=not self.progress):
            image, label = data[i]
            pred = self.model.predict(image)
            hist += confusion_matrix(label, pred, n)
            if len(rows) < PREVIEW_IMAGES:
                rows.append(prediction_row(image, label, pred, self.colours))
                shown += [label, pred]
        self.confusion = hist = self.world.sum_(hist, "validation")
        picture = panel(rows, titles=["image", "ground truth", "prediction"],
                        legend=class_legend(shown, self.class_names, self.colours))
        return scores(hist, self.class_names), picture


def print_table(record: dict, log=print) -> None:
    """One epoch's scores and per-class IoU, three classes a line."""
    partial = f", stopped after step {record['steps']}" if "steps" in record else ""
    lines = [f"\nepoch {record['epoch']:>3}  train loss {record['train_loss']:.4f}  "
             f"({record['seconds']:.0f} s{partial})",
             f"  {'pixel acc':>10} {'mean acc':>10} {'mean IoU':>10} {'fw IoU':>10}",
             f"  {record['pixel_acc']:>10.3f} {record['mean_acc']:>10.3f} "
             f"{record['mean_iou']:>10.3f} {record['fw_iou']:>10.3f}"]
    cells = [f"{name[:18]:<18} {'  -  ' if math.isnan(v) else f'{v:.3f}'}"
             for name, v in record["per_class_iou"].items()]
    lines += ["  " + "   ".join(cells[i:i + 3]) for i in range(0, len(cells), 3)]
    log("\n".join(lines))
    sys.stdout.flush()


def init_from(model, path) -> tuple[int, int]:
    """Copy into `model` every array of a checkpoint (or plain state dict) at `path` whose
    name and shape match: staged training (32s -> 16s -> 8s). Returns (copied, total)."""
    state = load(path)
    weights = state.get("model", state)
    own = model.state_dict()
    matching = {k: v for k, v in weights.items() if k in own and np.shape(v) == own[k].shape}
    model.load_state_dict(matching, strict=False)
    return len(matching), len(own)


# The reference's base learning rates for its summed (not averaged) loss, per model.
REFERENCE_LR = {"fcn32s": 1e-10, "fcn16s": 1e-12, "fcn8s": 1e-14, "fcn8s-at-once": 1e-10}


def reference_lr(model_name: str, at_once: bool, pixels_per_batch: int) -> float:
    """The reference's learning rate, translated to this engine's mean loss.

    The reference sums the loss over every pixel of a batch (`normalize: false`), so
    its gradient is `pixels_per_batch` times the mean loss's. The same step from the
    mean loss takes `lr_sum * pixels_per_batch`: for FCN-32s at 1e-10 on a 500 x 375
    image that is about 1.9e-5."""
    key = "fcn8s-at-once" if at_once else model_name
    if key not in REFERENCE_LR:
        raise ValueError(f"the reference recipe is defined for {sorted(REFERENCE_LR)}, "
                         f"not {model_name}")
    return REFERENCE_LR[key] * pixels_per_batch


def reference_param_groups(model, learn_upsampling: bool = False) -> list:
    """Parameter groups of the reference nets: every Deconvolution (transposed conv) frozen
    at its bilinear initialisation (lr_mult 0: here requires_grad=False, so no gradient is
    even computed) unless `learn_upsampling`; biases at twice the learning rate and without
    weight decay (lr_mult 2, decay_mult 0); weights as set (lr_mult 1, decay_mult 1)."""
    frozen = set()
    if not learn_upsampling:
        for module in model.modules():
            if isinstance(module, ConvTranspose2d):
                frozen.update(id(p) for p in module.parameters())
    weights, biases = [], []
    for name, p in model.named_parameters():
        if id(p) in frozen:
            p.requires_grad = False
        else:
            (biases if name.endswith(".bias") else weights).append(p)
    return [{"params": weights}, {"params": biases, "lr_mult": 2.0, "decay_mult": 0.0}]


def reference_optimizer(model, model_name: str, pixels_per_batch: int, total_steps: int,
                        lr=None, learn_upsampling: bool = False):
    """The reference's fine-tuning recipe: SGD with momentum 0.99 and weight decay 5e-4 over
    `reference_param_groups`, at a fixed learning rate (`reference_lr` unless `lr` is given).
    Returns (optimizer, schedule, lr)."""
    lr = lr or reference_lr(model_name, getattr(model, "at_once", False), pixels_per_batch)
    opt = SGD(reference_param_groups(model, learn_upsampling), lr, momentum=0.99,
              weight_decay=5e-4)
    return opt, ConstantLR(opt, total_steps), lr
