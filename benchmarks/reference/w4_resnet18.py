"""W4 reference: seed 004's hand-written loop ("Pytorch Tutorial for Practitioners"): ResNet-18.

torchvision's resnet18 (untrained, 10 classes) on CIFAR-10 python batches, a DataLoader (batch
128, shuffled) over a Dataset applying RandomResizedCrop + RandomHorizontalFlip + ToTensor +
Normalize, SGD(lr=0.002, momentum=0.9, weight_decay=1e-5), CrossEntropyLoss; after the epoch the
test set in eval mode with per-batch `.item()` precision. `--bf16` runs forward passes under
`torch.autocast(bfloat16)`; `--channels-last` converts the model and each batch to channels-last.

Changed from the seed, as pipeforge's recipe does: the crop is at CIFAR's own 32×32 (the seed's
deprecated RandomSizedCrop(256) upsampled 8×); the test set uses deterministic transforms in
order; no `Variable`. The pickles are read directly (torchvision's CIFAR10 md5-checks the
official files, and the benchmark writes its own); `torch.manual_seed` before the model.
The last stdout line is `BENCH_RESULT {json}`; the time covers the epoch loop only.
"""

import argparse
import contextlib
import json
import pickle
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torchvision.models as models
import torchvision.transforms as transforms
from PIL import Image
from torch.utils.data import DataLoader, Dataset

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class CIFAR10Batches(Dataset):
    """The CIFAR-10 python version, read like torchvision's CIFAR10 without its md5 check."""

    def __init__(self, root, train, transform):
        folder = Path(root) / "cifar-10-batches-py"
        names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        images, labels = [], []
        for name in names:
            with open(folder / name, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            images.append(entry["data"])
            labels.extend(entry["labels"])
        self.data = np.vstack(images).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
        self.targets = labels
        self.transform = transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def main(args):
    train_transformations = transforms.Compose([transforms.RandomResizedCrop(32),
                                                transforms.RandomHorizontalFlip(),
                                                transforms.ToTensor(),
                                                transforms.Normalize(mean=MEAN, std=STD)])
    test_transformations = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=MEAN, std=STD)])
    train_cifar10 = CIFAR10Batches(args.data, train=True, transform=train_transformations)
    test_cifar10 = CIFAR10Batches(args.data, train=False, transform=test_transformations)
    train_loader = DataLoader(train_cifar10, batch_size=128, shuffle=True)
    test_loader = DataLoader(test_cifar10, batch_size=128, shuffle=False)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(args.seed)
    net = models.resnet18(num_classes=10).to(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.002, momentum=0.9, weight_decay=1e-5)
    criterion = nn.CrossEntropyLoss()

    def autocast():
        return torch.autocast(device, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()

    started = time.perf_counter()
    steps = 0
    for epoch in range(args.epochs):
        net.train()
        for idx, (data, targets) in enumerate(train_loader):
            data, targets = data.to(device, memory_format=memory_format), targets.to(device)
            with autocast():
                output = net(data)
                loss = criterion(output, targets)
            precision = (output.argmax(1) == targets).float().mean().item()  # per batch, as the seed
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if idx % 10 == 0:
                print(f"epoch {epoch} batch {idx} loss {loss.item():.4f} precision {precision:.3f}")

        net.eval()
        correct, total = 0, 0
        with torch.no_grad():
            for idx, (data, targets) in enumerate(test_loader):
                data, targets = data.to(device, memory_format=memory_format), targets.to(device)
                with autocast():
                    output = net(data)
                correct += (output.argmax(1) == targets).sum().item()
                total += targets.size(0)
        accuracy = correct / total
        print(f"epoch {epoch} test accuracy {accuracy:.4f}")
    elapsed = time.perf_counter() - started
    return {"train_s": elapsed, "steps": steps, "samples": args.epochs * len(train_cifar10), "accuracy": accuracy}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="root holding cifar-10-batches-py/")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true", help="autocast forward passes to bfloat16")
    parser.add_argument("--channels-last", action="store_true", help="channels-last model and inputs")
    args = parser.parse_args()
    result = main(args)
    result["threads"] = torch.get_num_threads()
    print("BENCH_RESULT " + json.dumps(result))
