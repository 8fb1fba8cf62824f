"""`Trainer`: fit a segmentation model, validate it, save what a run leaves behind, and
resume exactly where an interrupted run stopped.

A run folder (`out`) holds what tinyfcn.report lists (config.json, log.csv, metrics.json,
training-curve.png, per-class-iou.png, confusion.png, predictions/epoch-NNN.png: image |
ground truth | prediction) and two checkpoints: checkpoint-last.npz and checkpoint-best.npz
(by validation mIoU; weights only unless `best_with_optimizer`). An evaluation alone
(`evaluate_and_write`) writes eval.json, confusion.csv and predictions/eval.png.

The training checkpoint is defined here, beside the code that reads it back:

    version        CHECKPOINT_VERSION
    config         the model's config (models.build rebuilds it; models.from_checkpoint
                   loads it with its weights, for prediction)
    class_names    the data set's classes, in label order
    palette        their colors (None: the VOC palette)
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
    run_id         which run wrote it (config.json names it too: tells run folders apart)
    run            free-form settings of whoever drove the run (the command's arguments)
    versions       the versions of Python, NumPy, Numba and tinyfcn that wrote it
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tinyfcn import models, random
from tinyfcn._runtime import configure_runtime
from tinyfcn.data.loader import batches_per_epoch, epoch_batches
from tinyfcn.data.palette import VOID
from tinyfcn.data.visualize import class_legend, panel, prediction_row
from tinyfcn.distributed import World
from tinyfcn.losses import loss_terms
from tinyfcn.metrics import confusion_matrix, scores
from tinyfcn.nn.utils import clip_grad_norm_, grad_norm
from tinyfcn.report import (
    OutputError,
    RunFolder,
    check_writable,
    print_table,
    run_id_in,
    versions,
    writing,
)
from tinyfcn.serialization import load, save
from tinyfcn.tensor import no_grad

CHECKPOINT_VERSION = 2
PREVIEW_IMAGES = 4
CHECKPOINTS = ("checkpoint-last.npz", "checkpoint-best.npz")

# Settings of a run that a resumed run may give anew: they change how long it runs, where
# it writes and how it reads, never what it computes. Any other setting given anew must
# equal the run's.
CHANGEABLE_ON_RESUME = frozenset({"epochs", "time_budget", "out", "eval_only", "skip_bad",
                                  "workers"})


class Interrupted(Exception):
    """Training stopped by Ctrl-C or SIGTERM; checkpoint-last.npz holds the exact position."""

    def __init__(self, signal_name: str, epoch: int, step: int, checkpoint: Path):
        super().__init__(f"interrupted by {signal_name} in epoch {epoch} after step {step}")
        self.signal_name, self.epoch, self.step, self.checkpoint = (signal_name, epoch, step,
                                                                    checkpoint)


class Diverged(Exception):
    """The loss, the gradients, the weights or the scores stopped being finite; the message
    names the last good checkpoint of the run (nothing non-finite is ever saved)."""


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


@contextlib.contextmanager
def _restoring_threads():
    """Training sets the process's thread counts for its own speed (`configure_runtime`);
    the program or notebook that called it gets its own back afterwards (BLAS, the
    convolutions' product pool, the Numba kernels and `set_threads`'s choice)."""
    import numba
    from threadpoolctl import threadpool_limits

    from tinyfcn import _runtime
    from tinyfcn.kernels import gemm_threads, set_gemm_threads
    kernels, products, chosen = numba.get_num_threads(), gemm_threads(), _runtime._chosen_threads
    wait_policy = os.environ.get("OMP_WAIT_POLICY")
    with threadpool_limits(limits=None):  # restores the BLAS libraries' counts on exit
        try:
            yield
        finally:
            numba.set_num_threads(kernels)
            set_gemm_threads(products)
            _runtime._chosen_threads = chosen
            if wait_policy is None:
                os.environ.pop("OMP_WAIT_POLICY", None)


def _plain(value):
    """`value` as JSON has it (tuples as lists, paths as text), to compare settings."""
    return json.loads(json.dumps(value, default=str))


@dataclass(frozen=True)
class RunSettings:
    """How a Trainer runs, apart from what it trains: `batch_size` (global, over every
    rank), `seed` (data order and augmentation), `clip_grad` (a global L2 norm, or None),
    `class_weights` (one loss weight per class, or None), `val_every` (validate every N
    epochs and after the last), `workers` (threads that prepare the next batches: the same
    batches either way), `best_with_optimizer` (checkpoint-best.npz resumable too)."""

    batch_size: int = 4
    seed: int = 0
    clip_grad: float | None = None
    class_weights: tuple | None = None
    val_every: int = 1
    workers: int = 0
    best_with_optimizer: bool = False

    def __post_init__(self):
        if self.batch_size < 1 or self.val_every < 1 or self.workers < 0:
            raise ValueError(f"batch_size and val_every must be >= 1 and workers >= 0, got "
                             f"{self.batch_size}, {self.val_every}, {self.workers}")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ValueError(f"clip_grad must be a positive norm, got {self.clip_grad}")
        if self.class_weights is not None:
            weights = np.asarray(self.class_weights, np.float64)
            if weights.ndim != 1 or not np.isfinite(weights).all() or (weights < 0).any():
                raise ValueError(f"class_weights must be finite and >= 0, one per class, got "
                                 f"{self.class_weights}")
            object.__setattr__(self, "class_weights", tuple(weights.tolist()))


class Trainer:
    """Train `model` on `train_set` with `optimizer` and `scheduler` (stepped once per
    batch), validating on `val_set`. Data sets are indexable collections of (uint8 image
    (H, W, 3), uint8 label (H, W), 255 = void) with `class_names`; `augment(image, label,
    rng)` makes a training sample (crop, flip, scale), seeded per item so that a resumed
    run, or a rank of a data-parallel one, sees exactly the data one run would have seen.

    `settings` is a RunSettings; its fields may also be given as keywords
    (`Trainer(..., batch_size=8)`). `loss_fn`: a name of `tinyfcn.losses.LOSSES` ("ce",
    "dice", "focal", "lovasz", "ce+dice"), Terms, or a callable with cross-entropy's
    signature (default: cross-entropy). `out`: the run folder; `world`: the ranks of a
    data-parallel run (default: this process alone); `run`: free-form settings stored with
    the run (config.json, the checkpoint); `log`: where lines of text go; `progress`: tqdm
    bars."""

    def __init__(self, model, optimizer, scheduler, train_set, val_set, augment,
                 settings: RunSettings | None = None, *, out="runs/latest", loss_fn=None,
                 world: World | None = None, run: dict | None = None, log=print,
                 progress: bool = True, **setting_fields):
        self.settings = replace(settings or RunSettings(), **setting_fields)
        self.world = world or World()
        if self.settings.batch_size % self.world.size:
            raise ValueError(f"batch_size must be a positive multiple of the {self.world.size} "
                             f"ranks, got {self.settings.batch_size}")
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.train_set, self.val_set, self.augment = train_set, val_set, augment
        self.out = Path(out)
        self.log = log if self.world.is_root else (lambda text: None)
        self.progress = progress and self.world.is_root  # tqdm bars for epochs and validation
        self.folder = RunFolder(out, enabled=self.world.is_root)
        self.confusion = None  # of the latest evaluation
        self.run = _plain(run or {})
        self.run_id = uuid.uuid4().hex[:12]
        self.class_names = list(train_set.class_names)
        self.colors = getattr(train_set, "palette", None)
        weights = self.settings.class_weights
        self.class_weights = None if weights is None else np.asarray(weights, np.float32)
        if self.class_weights is not None and self.class_weights.shape != (
                len(self.class_names),):
            raise ValueError(f"class_weights must hold one weight per class "
                             f"({len(self.class_names)}), got {self.class_weights.shape}")
        self.loss_terms = loss_terms(loss_fn, self.class_weights)
        self.epoch, self.step_in_epoch, self.epoch_losses = 0, 0, []
        self.history: list = []
        self.best_miou = -1.0
        self.clock = time.time
        self._resumed_from: Path | None = None  # the checkpoint this run continues
        self._good: tuple | None = None  # (path, epoch, step) of the last good checkpoint
        self._val_seconds: float | None = None  # the latest validation's

    @property
    def steps_per_epoch(self) -> int:
        return batches_per_epoch(len(self.train_set), self.settings.batch_size)

    # --------------------------------------------------------------- checkpoint
    def state_dict(self, with_optimizer: bool = True) -> dict:
        state = {"version": CHECKPOINT_VERSION, "config": self.model.config,
                 "class_names": self.class_names, "model": self.model.state_dict(),
                 "scheduler": self.scheduler.state_dict(),
                 "position": {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                              "epoch_losses": list(self.epoch_losses)},
                 "history": self.history, "best_miou": self.best_miou,
                 "seed": self.settings.seed, "batch_size": self.settings.batch_size,
                 "rng": random.get_rng_state(), "run_id": self.run_id, "run": self.run,
                 "versions": versions(),
                 "palette": None if self.colors is None else np.asarray(self.colors)}
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
                             f"as a starting point (init_from)")
        if "optimizer" not in state:
            raise ValueError(f"{source} holds weights only (no optimizer state): it cannot "
                             f"be resumed; start a new run from its weights (init_from)")
        expected = {"model": self.model.config, "class names": self.class_names,
                    "optimizer": type(self.optimizer).__name__,
                    "batch size": self.settings.batch_size}
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
        self.settings = replace(self.settings, seed=int(state["seed"]))
        self.run_id = state.get("run_id") or self.run_id  # older checkpoints have none

    def resume(self, path) -> None:
        """Continue the run whose checkpoint is at `path` (see `from_checkpoint` to rebuild
        the whole run from it)."""
        self.load_state_dict(load(path), path)
        self._continues(path)

    def _continues(self, path) -> None:
        self._resumed_from = Path(path)
        self._good = (Path(path), self.epoch, self.step_in_epoch)

    @classmethod
    def from_checkpoint(cls, path, overrides: dict, build, *, position: bool = True,
                        name=str, log=print) -> Trainer:
        """Rebuild and continue the run saved at `path`, reading the file once.

        The run's settings are the checkpoint's `run`, with `overrides` (settings given
        anew): one outside CHANGEABLE_ON_RESUME that differs from the run's is refused
        (`name(key)` words it, e.g. as a command-line flag). The run continues in the
        checkpoint's own folder unless `overrides` names an `out`. `build(run, model)` makes
        the Trainer from those settings and the checkpoint's model; then the optimizer,
        schedule, position and random state are restored (unless `position` is False: the
        weights alone, to evaluate them). A schedule built for more (or fewer) epochs than
        the run had keeps its new length."""
        path = Path(path)
        state = load(path)
        stored = state.get("run") if isinstance(state, dict) else None
        if not isinstance(stored, dict):
            raise ValueError(f"{path}: not a training checkpoint of tinyfcn (no run settings)")
        differ = [f"{name(k)} {_plain(v)} (the run's: {_plain(stored[k])})"
                  for k, v in overrides.items() if k in stored
                  and k not in CHANGEABLE_ON_RESUME and _plain(v) != _plain(stored[k])]
        if differ:
            raise ValueError(f"{path} continues a run with other settings: "
                             + "; ".join(differ) + " (leave them out, or start a new run)")
        run = {**stored, **overrides}
        if "out" not in overrides:
            run["out"] = str(path.parent)
        trainer = build(run, models.from_checkpoint(state, path))
        for key in sorted(overrides):
            if key in stored and _plain(overrides[key]) != _plain(stored[key]):
                log(f"{name(key)} {_plain(overrides[key])} (the run had {_plain(stored[key])})")
        if position:
            total = getattr(trainer.scheduler, "total_steps", None)  # None: no fixed length
            trainer.load_state_dict(state, path)
            log(f"Resuming {path} at epoch {trainer.epoch + 1}, step {trainer.step_in_epoch}")
            if total is not None and trainer.scheduler.total_steps != total:
                trainer.scheduler.set_total_steps(total)
                log(f"Learning-rate schedule now spans {total} steps "
                    f"(lr {trainer.optimizer.lr:.3g})")
        else:
            trainer.run_id = state.get("run_id") or trainer.run_id
        trainer._continues(path)
        return trainer

    def save(self, path, with_optimizer: bool = True) -> None:
        if self.world.is_root:  # one writer in data-parallel training
            with writing(path):
                save(self.state_dict(with_optimizer), path)

    def _save_last(self) -> None:
        """checkpoint-last.npz, only ever of a model whose weights are finite."""
        if not self._finite(scores=False):
            raise Diverged(f"the weights are not finite in epoch {self.epoch + 1}; "
                           f"{self._kept()}")
        path = self.out / "checkpoint-last.npz"
        self.save(path)
        self._good = (path, self.epoch, self.step_in_epoch)

    def _kept(self) -> str:
        if self._good is None:
            return "no checkpoint of this run was saved before"
        path, epoch, step = self._good
        where = f"epoch {epoch}" + (f", step {step} of epoch {epoch + 1}" if step else "")
        return f"the last good checkpoint is {path} ({where})"

    def _check_folder(self) -> None:
        """A continued run never writes into a folder holding another run's checkpoint."""
        if not self.world.is_root:
            return
        check_writable(self.out)
        if self._resumed_from is None or not any((self.out / n).is_file() for n in CHECKPOINTS):
            return  # a new run makes `out` its own
        other = run_id_in(self.out)
        own_folder = self.out.resolve() == self._resumed_from.parent.resolve()
        if other == self.run_id or (other is None and own_folder):
            return
        raise OutputError(f"{self.out} holds the checkpoints of another run (run id "
                          f"{other or 'unknown'}, this one is {self.run_id}): continue in "
                          f"{self._resumed_from.parent} or in a new folder")

    # ----------------------------------------------------------------- training
    def fit(self, epochs: int, time_budget: float | None = None) -> list:
        """Train until `epochs` epochs are done (counting those of a resumed run) or
        `time_budget` seconds have passed; validate every `val_every` epochs and after the
        last, save after every epoch. Returns the history. Raises `Interrupted` (after
        saving checkpoint-last.npz) on Ctrl-C or SIGTERM, `Diverged` when the loss, the
        gradients, the weights or the scores stop being finite, and `OutputError` when the
        run folder cannot be written (the last good checkpoint is kept).

        A time budget goes to training first: a validation due before the end runs only
        if the epochs left still fit after it; otherwise it is deferred to the end (the
        last validation always runs, even past the budget).

        Training is one of tinyfcn's entry points: it applies `configure_runtime()` (a
        no-op with TINYFCN_DEFAULT_RUNTIME=1; see the README's "Speed settings") and puts
        the process's thread settings back when it returns."""
        with _restoring_threads():
            configure_runtime()
            return self._fit(epochs, time_budget)

    def _fit(self, epochs: int, time_budget: float | None) -> list:
        self.world.check_same("the run (model, classes, data, batch, seed, position)", {
            "model": self.model.config, "classes": self.class_names,
            "seed": self.settings.seed, "batch": self.settings.batch_size,
            "data": [len(self.train_set), len(self.val_set)],
            "position": [self.epoch, self.step_in_epoch]})
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(self.train_set)} training images are fewer than one "
                             f"batch of {self.settings.batch_size}")
        self._check_folder()
        self.folder.start({"run_id": self.run_id, "run": self.run, "model": self.model.config,
                           "class_names": self.class_names,
                           "batch_size": self.settings.batch_size, "seed": self.settings.seed,
                           "loss": [t.name for t in self.loss_terms],
                           "class_weights": self.settings.class_weights},
                          self.epoch, self.step_in_epoch)
        deadline = self.clock() + time_budget if time_budget else math.inf
        signals = (_signals_raise() if self.world.size == 1
                   else _signals_recorded(self.world.signals))
        try:
            with signals:
                for epoch in range(self.epoch + 1, epochs + 1):
                    started = self.clock()
                    finished = self.train_one_epoch(epoch, deadline)
                    seconds = self.clock() - started
                    late = self._deadline_passed(deadline)
                    last = not finished or epoch == epochs or late
                    due = last or epoch % self.settings.val_every == 0
                    fits = last or (due and self._validation_fits(deadline, seconds,
                                                                  epochs - epoch))
                    self._end_epoch(epoch, finished, seconds, validate=fits,
                                    deferred=due and not fits)
                    if not finished or late:
                        self.log(f"Time budget of {time_budget:.0f} s reached in epoch {epoch}.")
                        break
        except (KeyboardInterrupt, _Signal) as e:
            name = "SIGINT" if isinstance(e, KeyboardInterrupt) else str(e)
            try:
                with _signals_deferred():
                    self._save_last()
            except _Signal:
                pass  # a second Ctrl-C during the save: the save has finished; stop all the same
            raise Interrupted(name, self.epoch + 1, self.step_in_epoch,
                              self.out / "checkpoint-last.npz") from None
        except OutputError as e:
            raise OutputError(f"{e}; {self._kept()}") from None
        return self.history

    def train_one_epoch(self, epoch: int, deadline: float = math.inf) -> bool:
        """The steps of `epoch` from the current position on; True if the epoch finished,
        False if the deadline stopped it (the position is kept for a resume)."""
        skip = self.step_in_epoch
        batches = epoch_batches(self.train_set, np.arange(len(self.train_set)),
                                self.settings.batch_size, self.augment, self.settings.seed,
                                epoch, skip=skip, workers=self.settings.workers,
                                part=(self.world.rank, self.world.size))
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

    def _root_decides(self, decision: bool, what: str) -> bool:
        """Rank 0's clock decides for every rank (they must act at the same step)."""
        vote = np.array([float(self.world.is_root and decision)])
        return bool(self.world.sum_(vote, what)[0])

    def _deadline_passed(self, deadline: float) -> bool:
        return self._root_decides(self.clock() > deadline, "the time budget")

    def _validation_fits(self, deadline: float, epoch_seconds: float, epochs_left: int) -> bool:
        """Whether a validation now leaves time for the epochs left (estimated from the
        latest validation, or before the first from this epoch's time per image)."""
        if deadline == math.inf:
            return True
        estimate = self._val_seconds
        if estimate is None:
            estimate = epoch_seconds * len(self.val_set) / max(len(self.train_set), 1)
        need = estimate + epochs_left * epoch_seconds
        return self._root_decides(self.clock() + need <= deadline, "the time budget")

    def train_step(self, images, labels, epoch: int, step: int, bar=None) -> float:
        """One optimizer step on this rank's share of a batch; returns the batch's loss."""
        model, opt = self.model, self.optimizer
        opt.zero_grad()
        value = self._loss_and_gradients(images, labels)
        norm = (clip_grad_norm_(model.parameters(), self.settings.clip_grad)
                if self.settings.clip_grad else grad_norm(model.parameters()))
        problem = (f"loss is {value}" if not math.isfinite(value) else
                   "gradients are not finite" if not math.isfinite(norm) else None)
        if problem:
            if bar is not None:
                bar.close()
            raise Diverged(f"{problem} at epoch {epoch}, step {step}; {self._kept()}")
        # the update and its bookkeeping: all or nothing (data-parallel runs only record
        # signals and act on them together at the next step)
        with _signals_deferred() if self.world.size == 1 else contextlib.nullcontext():
            opt.step()
            self.scheduler.step()
            self.epoch_losses.append(value)
            self.step_in_epoch = step
        return value

    def _loss_and_gradients(self, images, labels) -> float:
        """The one path of a step, for one process and for data-parallel ranks alike. Each
        loss term is summed over this rank's share of the batch and divided by the whole
        batch's count (tinyfcn.losses): the weight of its valid pixels for per-pixel terms,
        its images for per-image ones. The ranks' gradients then add up to the gradient of
        the whole batch's loss (one process: nothing to add). Returns that loss. A signal on
        any rank stops every rank here, before the step."""
        valid = labels != VOID
        weight = (self.class_weights[labels[valid]].sum() if self.class_weights is not None
                  else valid.sum())
        counts = self.world.sum_(np.array([weight, len(images), len(self.world.signals)],
                                          np.float64), "the step's pixel count")
        if counts[2]:
            raise _Signal(self.world.signals[0] if self.world.signals else signal.SIGINT)
        divisors = {"pixel": max(counts[0], 1e-30), "image": counts[1]}
        logits = self.model(self.model.preprocess(images))
        total, sums = 0.0, []
        for term in self.loss_terms:
            loss_sum = term.sum(logits, labels, VOID, self.class_weights)
            sums.append(float(loss_sum.data))
            total = total + loss_sum * logits.dtype.type(1 / divisors[term.per])
        total.backward()
        sums = self.world.sum_gradients(self.optimizer.params, sums)
        return float(sum(s / divisors[t.per] for s, t in zip(sums, self.loss_terms)))

    def _finite(self, scores: bool = True) -> bool:
        """Whether the weights, and the scores of the first validation image, are finite
        (a huge but finite weight can still give infinite scores)."""
        if not all(np.isfinite(v).all() for v in self.model.state_dict().values()
                   if np.issubdtype(np.asarray(v).dtype, np.floating)):
            return False
        if not scores or not len(self.val_set):
            return True
        image = np.asarray(self.val_set[0][0])
        was_training = self.model.training
        self.model.eval()
        try:
            with no_grad():
                return bool(np.isfinite(self.model(self.model.preprocess(image[None])).data)
                            .all())
        finally:
            self.model.train(was_training)

    def _end_epoch(self, epoch: int, finished: bool, seconds: float, validate=True,
                   deferred=False) -> None:
        """Validate (unless told not to), record, print and save; a partial epoch is recorded
        (and replaced once a resumed run finishes it) but the position stays inside it."""
        if validate:
            started = self.clock()
            result, picture = self.evaluate()
            self._val_seconds = self.clock() - started
        else:  # recorded with the training loss alone
            result = {k: float("nan") for k in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")}
            result["per_class_iou"] = {name: float("nan") for name in self.class_names}
        record = {"epoch": epoch, "train_loss": float(np.mean(self.epoch_losses))
                  if self.epoch_losses else float("nan"), **result, "seconds": seconds}
        if not finished:
            record["steps"] = self.step_in_epoch
        history = [r for r in self.history if r["epoch"] != epoch] + [record]
        is_best = result["mean_iou"] > self.best_miou  # False for NaN (not validated)
        if not self._finite():
            raise Diverged(f"the weights or scores are not finite after epoch {epoch}; "
                           f"{self._kept()}")
        with _signals_deferred():
            self.history = history
            if finished:
                self.epoch, self.step_in_epoch, self.epoch_losses = epoch, 0, []
            if is_best:
                self.best_miou = result["mean_iou"]
        self._save_last()
        if not validate:
            why = ("validation deferred to the end: the time budget goes to training first"
                   if deferred else f"validated every {self.settings.val_every} epochs")
            self.log(f"epoch {epoch:>3}  train loss {record['train_loss']:.4f}  "
                     f"({seconds:.0f} s; {why})")
            self.folder.write_history(self.history)
            return
        print_table(record, self.log)
        if is_best:
            self.save(self.out / "checkpoint-best.npz", self.settings.best_with_optimizer)
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
                rows.append(prediction_row(image, label, pred, self.colors))
                shown += [label, pred]
        self.confusion = hist = self.world.sum_(hist, "validation")
        picture = panel(rows, titles=["image", "ground truth", "prediction"],
                        legend=class_legend(shown, self.class_names, self.colors))
        return scores(hist, self.class_names), picture

    def evaluate_and_write(self) -> dict:
        """Validate the model as it is, print the scores and write eval.json,
        confusion.csv, predictions/eval.png, per-class-iou.png and confusion.png to the
        run folder. Returns the scores."""
        self._check_folder()
        result, picture = self.evaluate()
        print_table({"epoch": self.epoch, "train_loss": float("nan"), **result,
                     "seconds": 0.0}, self.log)
        self.folder.write_evaluation(result, self.confusion, self.class_names, picture)
        return result
