"""pipeforge-cifar: the CIFAR-10 dataset (with or without the md5 check) and ResNet-18."""

__version__ = "0.1.0"
