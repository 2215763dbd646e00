"""LeNet-5 as Caffe's MNIST example defines it (the variant of the pruning literature, e.g. Han et
al. 2015): conv 20@5x5, max-pool 2, conv 50@5x5, max-pool 2, fc 500, ReLU, fc 10; 431,080
parameters. Caffe has a ReLU after fc 500 only, not after the convolutions."""

from __future__ import annotations

import torch
from torch import nn

from nncompress.nets.registry import IMAGE_SHAPE, NUM_CLASSES, NetConfig, register


class LeNet5(nn.Module):
    """(N, 784) or (N, 1, 28, 28) images -> logits (N, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(IMAGE_SHAPE[0], 20, kernel_size=5)  # 28x28 -> 24x24
        self.pool1 = nn.MaxPool2d(2)  # -> 12x12
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)  # -> 8x8
        self.pool2 = nn.MaxPool2d(2)  # -> 4x4
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(500, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *IMAGE_SHAPE)  # the splits hold flat images
        x = self.pool2(self.conv2(self.pool1(self.conv1(x))))
        return self.fc2(self.act(self.fc1(torch.flatten(x, 1))))


@register("lenet5")
class LeNet5Config(NetConfig):
    """A fixed network: the section is `arch: lenet5` alone."""

    def build(self) -> LeNet5:
        return LeNet5()
