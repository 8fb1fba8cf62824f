"""Optimizers (SGD with momentum and Nesterov, Adam) and learning-rate schedules (poly,
cosine, step, constant, each with an optional linear warm-up).

Updates follow PyTorch's formulas exactly, in place on the parameters' arrays
and in their dtype. `state_dict()` holds plain arrays and numbers, so it goes
into a checkpoint with `tinyfcn.save`.
"""

from __future__ import annotations

import math

import numpy as np


def _param_groups(params) -> list:
    """[{"params": [...], "lr_mult": m, "decay_mult": d}] from parameters or group dicts."""
    params = list(params)
    if params and not isinstance(params[0], dict):
        params = [{"params": params}]
    groups = []
    for group in params:
        unknown = set(group) - {"params", "lr_mult", "decay_mult"}
        if not isinstance(group, dict) or "params" not in group or unknown:
            raise ValueError(f"a parameter group is a dict with 'params' and optionally "
                             f"'lr_mult' and 'decay_mult', got {sorted(group)}")
        lr_mult, decay_mult = float(group.get("lr_mult", 1.0)), float(group.get("decay_mult", 1.0))
        if lr_mult < 0 or decay_mult < 0:
            raise ValueError("lr_mult and decay_mult must be >= 0")
        groups.append({"params": list(group["params"]), "lr_mult": lr_mult,
                       "decay_mult": decay_mult})
    return groups


class Optimizer:
    """`params`: parameters, or parameter groups as in Caffe's prototxt, each a dict
    {"params": [...], "lr_mult": 2.0, "decay_mult": 0.0} whose learning rate and weight
    decay are the optimizer's times these multipliers (FCN's reference nets learn biases at
    twice the rate without decay). Schedules change the optimizer's `lr`; the multipliers
    stay."""

    weight_decay = 0.0

    def __init__(self, params, lr: float):
        groups = _param_groups(params)
        self.params = [p for g in groups for p in g["params"]]
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        if lr < 0:
            raise ValueError(f"learning rate lr must be >= 0, got {lr}")
        self.lr = lr
        self.multipliers = [(g["lr_mult"], g["decay_mult"]) for g in groups
                            for _ in g["params"]]
        self.state = [{} for _ in self.params]  # per parameter, by position
        self.steps = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        self.steps += 1
        for p, state, (lr_mult, decay_mult) in zip(self.params, self.state, self.multipliers):
            if p.grad is not None:
                self.update(p.data, p.grad, state, self.lr * lr_mult,
                            self.weight_decay * decay_mult)

    def update(self, param: np.ndarray, grad: np.ndarray, state: dict, lr: float,
               weight_decay: float) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"lr": self.lr, "steps": self.steps,
                "state": {str(i): dict(s) for i, s in enumerate(self.state)}}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict["state"]
        if len(saved) != len(self.params):
            raise ValueError(f"optimizer state holds {len(saved)} parameters, "
                             f"this optimizer has {len(self.params)}")
        self.lr, self.steps = float(state_dict["lr"]), int(state_dict["steps"])
        for i, p in enumerate(self.params):
            self.state[i] = {k: np.array(v, dtype=p.dtype) for k, v in saved[str(i)].items()}


class SGD(Optimizer):
    """p -= lr * d, with d = g + weight_decay * p, then momentum (buf = m * buf + d) and
    optionally Nesterov (d + m * buf), as torch.optim.SGD."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov

    def update(self, param, grad, state, lr, weight_decay):
        d = grad + param.dtype.type(weight_decay) * param if weight_decay else grad
        if self.momentum:
            m = param.dtype.type(self.momentum)
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = d.copy()
            else:
                buf = state["momentum_buffer"]
                buf *= m
                buf += d
            buf = state["momentum_buffer"]
            d = d + m * buf if self.nesterov else buf
        param -= param.dtype.type(lr) * d


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, as torch.optim.Adam (L2 weight decay)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay

    def update(self, param, grad, state, lr, weight_decay):
        b1, b2 = self.betas
        dtype = param.dtype.type
        g = grad + dtype(weight_decay) * param if weight_decay else grad
        if "exp_avg" not in state:
            state["exp_avg"] = np.zeros_like(param)
            state["exp_avg_sq"] = np.zeros_like(param)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= dtype(b1)
        m += dtype(1 - b1) * g
        v *= dtype(b2)
        v += dtype(1 - b2) * g * g
        step_size = lr / (1 - b1 ** self.steps)
        denom = np.sqrt(v / dtype(1 - b2 ** self.steps)) + dtype(self.eps)
        param -= dtype(step_size) * m / denom


class LRSchedule:
    """Sets `optimizer.lr` before every step: base_lr x warm-up x decay(progress), where
    the warm-up rises linearly over the first `warmup_steps` steps (a steadier start for
    small data sets and fresh layers) and progress = step / total_steps. Call `step()`
    after each optimizer step."""

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_steps: int = 0):
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.optimizer, self.total_steps, self.warmup_steps = optimizer, total_steps, warmup_steps
        self.base_lr, self.last_step = optimizer.lr, 0
        self._apply()

    def decay(self, progress: float) -> float:
        raise NotImplementedError

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def _apply(self) -> None:
        progress = min(self.last_step, self.total_steps) / self.total_steps
        warm = min(1.0, (self.last_step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        self.optimizer.lr = self.base_lr * warm * self.decay(progress)

    def set_total_steps(self, total_steps: int) -> None:
        """Stretch (or shrink) the schedule, as a resumed run with more epochs needs: the
        rate continues from where `last_step` lies on the new one."""
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total_steps = total_steps
        self._apply()

    def state_dict(self) -> dict:
        return {"kind": type(self).__name__, "base_lr": self.base_lr,
                "last_step": self.last_step, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state: dict) -> None:
        kind = state.get("kind", "PolyLR")
        if kind != type(self).__name__:
            raise ValueError(f"a {kind} state cannot load into a {type(self).__name__}")
        self.base_lr, self.last_step = float(state["base_lr"]), int(state["last_step"])
        self.total_steps = int(state["total_steps"])
        self.warmup_steps = int(state.get("warmup_steps", 0))


class PolyLR(LRSchedule):
    """lr = base_lr * (1 - step / total_steps) ** power (FCN's and DeepLab's "poly")."""

    def __init__(self, optimizer: Optimizer, total_steps: int, power: float = 0.9,
                 warmup_steps: int = 0):
        self.power = power
        super().__init__(optimizer, total_steps, warmup_steps)

    def decay(self, progress: float) -> float:
        return (1 - progress) ** self.power

    def state_dict(self) -> dict:
        return {**super().state_dict(), "power": self.power}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.power = float(state["power"])


class CosineLR(LRSchedule):
    """lr = base_lr * (1 + cos(pi * step / total_steps)) / 2."""

    def decay(self, progress: float) -> float:
        return 0.5 * (1 + math.cos(math.pi * progress))


class StepLR(LRSchedule):
    """lr = base_lr * gamma ** (milestones passed), the milestones given as fractions of
    training (default: x0.1 at half and at three quarters)."""

    def __init__(self, optimizer: Optimizer, total_steps: int, milestones=(0.5, 0.75),
                 gamma: float = 0.1, warmup_steps: int = 0):
        self.milestones, self.gamma = tuple(milestones), gamma
        super().__init__(optimizer, total_steps, warmup_steps)

    def decay(self, progress: float) -> float:
        return self.gamma ** sum(progress >= m for m in self.milestones)


class ConstantLR(LRSchedule):
    """lr = base_lr throughout (after the warm-up)."""

    def decay(self, progress: float) -> float:
        return 1.0


SCHEDULES = {"poly": PolyLR, "cosine": CosineLR, "step": StepLR, "constant": ConstantLR}


# ------------------------------------------------------------------ building by name
# Each optimizer's defaults when a run names it: one place, so the command line, the
# Trainer and a resumed run agree (Adam's usual rate without decay; SGD as in FCN).
OPTIMIZERS = {"sgd": (SGD, {"lr": 0.01, "weight_decay": 5e-4, "momentum": 0.9}),
              "adam": (Adam, {"lr": 1e-3, "weight_decay": 0.0})}


def build(name: str, params, lr: float | None = None, weight_decay: float | None = None,
          momentum: float | None = None) -> Optimizer:
    """The optimizer `name` ("sgd" or "adam") over `params`; None takes its default
    (OPTIMIZERS). `momentum` is SGD's; Adam has none (its betas play that part), so there
    it is not used."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}")
    cls, defaults = OPTIMIZERS[name]
    given = {"lr": lr, "weight_decay": weight_decay,
             "momentum": momentum if "momentum" in defaults else None}
    return cls(params, **{**defaults, **{k: v for k, v in given.items() if v is not None}})
