"""Overlay the training curves of several runs: the comparison between FCN-32s, 16s and 8s.

    python examples/plot_runs.py runs/fcn32s runs/fcn16s runs/fcn8s --out runs.png

The same program as the `tinyfcn-plot-runs` command (tinyfcn/cli/plot_runs.py), which
`pip install .` puts on PATH; `--help` lists its options.
"""

import sys

from tinyfcn.cli.plot_runs import main

if __name__ == "__main__":
    sys.exit(main())
