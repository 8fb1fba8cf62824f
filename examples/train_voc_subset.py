"""Train an FCN on a PASCAL VOC-layout data set; with no arguments, on the built-in one.

    python examples/train_voc_subset.py                       # FCN-8s-lite, built-in data
    python examples/train_voc_subset.py --model fcn32s        # the coarse sibling
    python examples/train_voc_subset.py --voc-root ~/VOCdevkit/VOC2012 --subset 200

The same command as `tinyfcn-train` (installed with the package): its code is
tinyfcn/cli/train.py; `--help` lists the options.
"""

import sys

from tinyfcn.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
