"""Segment images with a trained checkpoint: palette-PNG masks and overlays.

    python examples/predict.py runs/latest/checkpoint-best.npz photo.jpg more/ --out masks/

The same program as the `tinyfcn-predict` command (tinyfcn/cli/predict.py), which
`pip install .` puts on PATH; `--help` lists its options.
"""

import sys

from tinyfcn.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
