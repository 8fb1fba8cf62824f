"""Functional ops with PyTorch's names, arguments and semantics (NCHW). Import as `F`."""

from tinyfcn.functional.activation import prelu
from tinyfcn.functional.basic import center_crop, crop, dropout, relu
from tinyfcn.functional.conv import conv2d, conv2d_matrix, conv_transpose2d
from tinyfcn.functional.loss import cross_entropy, dice_loss, focal_loss, lovasz_softmax
from tinyfcn.functional.normalization import batch_norm
from tinyfcn.functional.pooling import max_pool2d, max_unpool2d, unpool2d

__all__ = [
    "batch_norm", "center_crop", "conv2d", "conv2d_matrix", "conv_transpose2d", "crop",
    "cross_entropy", "dice_loss", "dropout", "focal_loss", "lovasz_softmax", "max_pool2d",
    "max_unpool2d", "prelu", "relu", "unpool2d",
]
