"""W3 reference: seed 001's hand-written loop ("PyTorch Pipeline", 王哲峰): Fashion-MNIST MLP.

torchvision's FashionMNIST with `transform=ToTensor()` in two DataLoaders (batch 64, not
shuffled, as the seed), Flatten-784-512-ReLU-512-ReLU-10, CrossEntropyLoss, SGD(lr=1e-3); the
seed's train() (`loss.item()` every 100 batches) and test() (per-batch `.item()`) every epoch.

Changed from the seed: its two typos (`mode.parameters()`, `devcie`) fixed, as pipeforge's recipe
does; `download=False` (the benchmark writes the idx files itself); `torch.manual_seed` before the
model so the initial weights equal pipeforge's; epochs and data root from the command line.
The last stdout line is `BENCH_RESULT {json}`; the time covers the epoch loop only.
"""

import argparse
import json
import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import ToTensor

device = "cuda" if torch.cuda.is_available() else "cpu"


class NeuralNetwork(nn.Module):
    def __init__(self):
        super(NeuralNetwork, self).__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, 10),
        )

    def forward(self, x):
        x = self.flatten(x)
        logits = self.linear_relu_stack(x)
        return logits


def train(dataloader, model, loss_fn, optimizer):
    size = len(dataloader.dataset)
    model.train()
    for batch, (X, y) in enumerate(dataloader):
        X, y = X.to(device), y.to(device)
        pred = model(X)
        loss = loss_fn(pred, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if batch % 100 == 0:
            loss, current = loss.item(), batch * len(X)
            print(f"loss: {loss:>7f} [{current:>5d}/{size:>5d}]")
    return len(dataloader)


def test(dataloader, model, loss_fn):
    size = len(dataloader.dataset)
    num_batches = len(dataloader)
    model.eval()
    test_loss, correct = 0, 0
    with torch.no_grad():
        for X, y in dataloader:
            X, y = X.to(device), y.to(device)
            pred = model(X)
            test_loss += loss_fn(pred, y).item()
            correct += (pred.argmax(1) == y).type(torch.float).sum().item()
    test_loss /= num_batches
    correct /= size
    print(f"Accuracy: {(100 * correct):>0.1f}, Avg loss: {test_loss:>8f}")
    return correct


def main(args):
    training_data = datasets.FashionMNIST(root=args.data, train=True, download=False, transform=ToTensor())
    test_data = datasets.FashionMNIST(root=args.data, train=False, download=False, transform=ToTensor())
    batch_size = 64
    train_dataloader = DataLoader(training_data, batch_size=batch_size)
    test_dataloader = DataLoader(test_data, batch_size=batch_size)

    torch.manual_seed(args.seed)
    model = NeuralNetwork().to(device)
    loss_fn = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    started = time.perf_counter()
    steps = 0
    for t in range(args.epochs):
        print(f"Epoch {t+1}\n-----------------------------")
        steps += train(train_dataloader, model, loss_fn, optimizer)
        accuracy = test(test_dataloader, model, loss_fn)
    elapsed = time.perf_counter() - started
    print("Done!")
    return {"train_s": elapsed, "steps": steps, "samples": args.epochs * len(training_data), "accuracy": accuracy}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="root holding FashionMNIST/raw/")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = main(args)
    result["threads"] = torch.get_num_threads()
    print("BENCH_RESULT " + json.dumps(result))
