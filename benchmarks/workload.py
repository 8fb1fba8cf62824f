"""The benchmark workload without tinyfcn: the batch, and FCN-8s-lite in PyTorch (the
benchmark-only peer), so a PyTorch-only process measures PyTorch alone."""

from __future__ import annotations

import numpy as np

BATCH, SIZE, CLASSES = 8, 128, 21


def batch(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype(np.float32)
    target = rng.integers(0, CLASSES, (BATCH, SIZE, SIZE))
    return x, target


def torch_fcn8s_lite(torch, state_dict=None):
    """FCN-8s-lite in PyTorch, layer for layer; loaded with tinyfcn's weights if given."""
    nn = torch.nn

    class FCN8sLite(nn.Module):
        def __init__(self):
            super().__init__()
            widths, cin = (32, 64, 128, 256, 256), 3
            for b, w in enumerate(widths, start=1):
                for i in (1, 2):
                    setattr(self, f"conv{b}_{i}", nn.Conv2d(cin, w, 3, padding=1))
                    cin = w
            self.fc6 = nn.Conv2d(256, 512, 3, padding=1)
            self.fc7 = nn.Conv2d(512, 512, 1)
            self.score_fr = nn.Conv2d(512, CLASSES, 1)
            self.score_pool4 = nn.Conv2d(256, CLASSES, 1)
            self.score_pool3 = nn.Conv2d(128, CLASSES, 1)
            self.upscore2 = nn.ConvTranspose2d(CLASSES, CLASSES, 4, 2, 1, bias=False)
            self.upscore_pool4 = nn.ConvTranspose2d(CLASSES, CLASSES, 4, 2, 1, bias=False)
            self.upscore8 = nn.ConvTranspose2d(CLASSES, CLASSES, 16, 8, 4, bias=False)

        def forward(self, x):
            pools = []
            for b in range(1, 6):
                for i in (1, 2):
                    x = torch.relu(getattr(self, f"conv{b}_{i}")(x))
                x = torch.nn.functional.max_pool2d(x, 2, 2)
                pools.append(x)
            h = self.score_fr(torch.relu(self.fc7(torch.relu(self.fc6(x)))))
            h = self.upscore2(h) + self.score_pool4(pools[3])
            h = self.upscore_pool4(h) + self.score_pool3(pools[2])
            return self.upscore8(h)

    model = FCN8sLite()
    if state_dict is not None:
        model.load_state_dict({k: torch.tensor(v) for k, v in state_dict.items()})
    return model


def torch_passes(torch, x, target, state_dict=None):
    """(training step, inference) of FCN-8s-lite in PyTorch on the batch `x`, `target`: SGD
    with momentum, cross-entropy with void 255, as tinyfcn's step (benchmarks/common.py)."""
    model = torch_fcn8s_lite(torch, state_dict)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    xt, tt = torch.tensor(x), torch.tensor(target)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), tt, ignore_index=255).backward()
        opt.step()

    def infer():
        with torch.no_grad():
            model(xt)
    return step, infer
