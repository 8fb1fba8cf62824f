"""Optimizers (SGD with momentum and Nesterov, Adam) and learning-rate schedules (poly,
cosine, milestone, constant, each with an optional linear warm-up; PyTorch's StepLR).

Updates follow PyTorch's formulas exactly, in place on the parameters' arrays
and in their dtype. Settings live in `optimizer.param_groups`, as in PyTorch, and
each step reads them afresh. `state_dict()` holds plain arrays and numbers, so it
goes into a checkpoint with `tinyfcn.save`.
"""

from __future__ import annotations

import math

import numpy as np

from tinyfcn.tensor import Tensor

MULTIPLIERS = {"lr_mult": 1.0, "decay_mult": 1.0}  # Caffe's names, scaling lr and decay


class Optimizer:
    """`params`: parameters, or parameter groups: dicts with "params" and any of the
    optimizer's settings, PyTorch's keys ("lr", "weight_decay", SGD's "momentum" and
    "nesterov", Adam's "betas" and "eps"), which override the constructor's for that
    group, and Caffe's multipliers "lr_mult" and "decay_mult" (default 1), which scale
    the group's lr and weight decay (FCN's reference nets learn biases at twice the rate
    without decay: {"params": biases, "lr_mult": 2, "decay_mult": 0}).

    `param_groups` lists the groups, each dict holding all its settings. A step reads
    them afresh: a schedule, or your code, sets `group["lr"]` and the next step uses it.
    A group's parameters move with lr * lr_mult and decay with weight_decay * decay_mult.
    """

    def __init__(self, params, defaults: dict):
        self.defaults = defaults
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of parameters or of parameter "
                            "groups, got a single Tensor (wrap it in a list)")
        params = list(params)
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = [self._group(group) for group in groups]
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("some parameters appear in more than one parameter group")
        self.state = [{} for _ in self.params]  # per parameter, by position
        self.steps = 0

    def _group(self, group) -> dict:
        """A complete group: the constructor's settings, then multipliers 1, then `group`'s."""
        settings = sorted({*self.defaults, *MULTIPLIERS})
        if not isinstance(group, dict) or "params" not in group:
            raise ValueError(f"a parameter group is a dict with 'params' and optionally "
                             f"{settings}, got {group!r:.80}")
        unknown = sorted(set(group) - {"params", *settings})
        if unknown:
            raise ValueError(f"parameter group has unknown keys {unknown}; "
                             f"{type(self).__name__} takes 'params' and {settings}")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"an optimizer updates Tensors (Parameters), got "
                                f"{type(p).__name__}")
        full = {"params": params, **self.defaults, **MULTIPLIERS,
                **{k: v for k, v in group.items() if k != "params"}}
        self.check_settings(full)
        return full

    def check_settings(self, group: dict) -> None:
        """Raise ValueError naming a setting of `group` that is out of range."""
        for key in ("lr", "weight_decay", "momentum", "eps", *MULTIPLIERS):
            if key in group and not group[key] >= 0:
                raise ValueError(f"{key} must be >= 0, got {group[key]}")

    @property
    def params(self) -> list:
        """Every parameter, group after group (the order of `state`)."""
        return [p for group in self.param_groups for p in group["params"]]

    @property
    def lr(self) -> float:
        """The first group's learning rate (the rate, when all groups share one); setting
        it sets every group's."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        for group in self.param_groups:
            group["lr"] = value

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        self.steps += 1
        states = iter(self.state)
        for group in self.param_groups:
            lr = group["lr"] * group["lr_mult"]
            weight_decay = group["weight_decay"] * group["decay_mult"]
            for p, state in zip(group["params"], states):
                if p.grad is not None:
                    self.update(p.data, p.grad, state, lr, weight_decay, group)

    def update(self, param: np.ndarray, grad: np.ndarray, state: dict, lr: float,
               weight_decay: float, group: dict) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"steps": self.steps,
                "state": {str(i): dict(s) for i, s in enumerate(self.state)},
                "param_groups": [{k: v for k, v in group.items() if k != "params"}
                                 for group in self.param_groups]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the step count, each parameter's state and each group's settings (as
        PyTorch: the saved settings replace the constructor's)."""
        saved = state_dict["state"]
        if len(saved) != len(self.params):
            raise ValueError(f"optimizer state holds {len(saved)} parameters, "
                             f"this optimizer has {len(self.params)}")
        # files written before parameter groups held their settings keep one "lr"
        groups = state_dict.get("param_groups", [{"lr": state_dict.get("lr")}]
                                * len(self.param_groups))
        if len(groups) != len(self.param_groups):
            raise ValueError(f"optimizer state holds {len(groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        for group, settings in zip(self.param_groups, groups):
            unknown = set(settings) - set(group)
            if unknown:
                raise ValueError(f"optimizer state has settings {sorted(unknown)} that a "
                                 f"{type(self).__name__} does not have")
            updated = {**group, **{k: v for k, v in settings.items() if v is not None}}
            self.check_settings(updated)
            group.update(updated)
        self.steps = int(state_dict["steps"])
        for i, p in enumerate(self.params):
            self.state[i] = {k: np.array(v, dtype=p.dtype) for k, v in saved[str(i)].items()}


class SGD(Optimizer):
    """p -= lr * d, with d = g + weight_decay * p, then momentum (buf = m * buf + d) and
    optionally Nesterov (d + m * buf), as torch.optim.SGD."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      nesterov=nesterov))

    def check_settings(self, group):
        super().check_settings(group)
        if group["nesterov"] and group["momentum"] <= 0:
            raise ValueError("nesterov=True needs momentum > 0")

    def update(self, param, grad, state, lr, weight_decay, group):
        d = grad + param.dtype.type(weight_decay) * param if weight_decay else grad
        if group["momentum"]:
            m = param.dtype.type(group["momentum"])
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = d.copy()
            else:
                buf = state["momentum_buffer"]
                buf *= m
                buf += d
            buf = state["momentum_buffer"]
            d = d + m * buf if group["nesterov"] else buf
        param -= param.dtype.type(lr) * d


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, as torch.optim.Adam (L2 weight decay)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))

    def check_settings(self, group):
        super().check_settings(group)
        betas = group["betas"]
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")

    def update(self, param, grad, state, lr, weight_decay, group):
        b1, b2 = group["betas"]
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
        denom = np.sqrt(v / dtype(1 - b2 ** self.steps)) + dtype(group["eps"])
        param -= dtype(step_size) * m / denom


class LRScheduler:
    """Sets every group's lr to its base rate (its lr when the schedule was made) times
    `factor()`, a function of the number of `step()` calls so far. Call `step()` after
    each optimizer step (the Trainer does, once per batch)."""

    def __init__(self, optimizer: Optimizer):
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def factor(self) -> float:
        raise NotImplementedError

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list:
        """Each group's current learning rate (PyTorch's name)."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def _apply(self) -> None:
        factor = self.factor()
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def state_dict(self) -> dict:
        return {"kind": type(self).__name__, "base_lrs": list(self.base_lrs),
                "last_step": self.last_step}

    def accepts(self, kind: str, state: dict) -> bool:
        """Whether a state of schedule `kind` loads into this one."""
        return kind == type(self).__name__

    def load_state_dict(self, state: dict) -> None:
        kind = state.get("kind", "PolyLR")
        if not self.accepts(kind, state):
            raise ValueError(f"a {kind} state cannot load into a {type(self).__name__}")
        groups = len(self.optimizer.param_groups)
        # files written before schedules kept one rate per group hold one "base_lr"
        base_lrs = [float(b) for b in state.get("base_lrs", [state.get("base_lr")] * groups)]
        if len(base_lrs) != groups:
            raise ValueError(f"the {kind} state holds {len(base_lrs)} base rates, the "
                             f"optimizer has {groups} parameter groups")
        self.base_lrs, self.last_step = base_lrs, int(state["last_step"])


class LRSchedule(LRScheduler):
    """A schedule over a known length: factor = warm-up x decay(progress), where the warm-up
    rises linearly over the first `warmup_steps` steps (a steadier start for small data
    sets and fresh layers) and progress = step / total_steps."""

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_steps: int = 0):
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        super().__init__(optimizer)

    def decay(self, progress: float) -> float:
        raise NotImplementedError

    def factor(self) -> float:
        progress = min(self.last_step, self.total_steps) / self.total_steps
        warm = min(1.0, (self.last_step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        return warm * self.decay(progress)

    def set_total_steps(self, total_steps: int) -> None:
        """Stretch (or shrink) the schedule, as a resumed run with more epochs needs: the
        rate continues from where `last_step` lies on the new one."""
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total_steps = total_steps
        self._apply()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
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


class MilestoneLR(LRSchedule):
    """lr = base_lr * gamma ** (milestones passed), the milestones given as fractions of
    training (default: x0.1 at half and at three quarters). Earlier versions of tinyfcn
    called it StepLR; that name now means PyTorch's schedule (below)."""

    def __init__(self, optimizer: Optimizer, total_steps: int, milestones=(0.5, 0.75),
                 gamma: float = 0.1, warmup_steps: int = 0):
        self.milestones, self.gamma = tuple(milestones), gamma
        super().__init__(optimizer, total_steps, warmup_steps)

    def decay(self, progress: float) -> float:
        return self.gamma ** sum(progress >= m for m in self.milestones)

    def accepts(self, kind, state):
        # a checkpoint written while this schedule was called StepLR (it has no step_size)
        return super().accepts(kind, state) or (kind == "StepLR" and "step_size" not in state)


class StepLR(LRScheduler):
    """PyTorch's StepLR: lr = base_lr * gamma ** (steps // step_size), `steps` counting the
    calls of `step()` (once per batch under the Trainer, so step_size is in batches)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        if not isinstance(step_size, (int, np.integer)) or step_size < 1:
            raise ValueError(f"step_size must be an integer >= 1, got {step_size!r}")
        self.step_size, self.gamma = int(step_size), gamma
        super().__init__(optimizer)

    def factor(self) -> float:
        return self.gamma ** (self.last_step // self.step_size)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "step_size": self.step_size, "gamma": self.gamma}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") == "StepLR" and "step_size" not in state:
            raise ValueError("this StepLR state is of tinyfcn's former StepLR (milestones, no "
                             "step_size), now MilestoneLR: load it into a MilestoneLR")
        super().load_state_dict(state)
        self.step_size, self.gamma = int(state["step_size"]), float(state["gamma"])


class ConstantLR(LRSchedule):
    """lr = base_lr throughout (after the warm-up)."""

    def decay(self, progress: float) -> float:
        return 1.0


# the schedules over a run of known length, by their names in the command-line tools
SCHEDULES = {"poly": PolyLR, "cosine": CosineLR, "step": MilestoneLR, "constant": ConstantLR}


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
