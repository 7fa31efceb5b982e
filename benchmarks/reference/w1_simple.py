"""W1 reference: seed 000's hand-written loop ("A Simple Pytorch Trainpipeline", jamesnulliu).

Linear(10, 2) on random vectors with random labels, CrossEntropyLoss, SGD(lr=0.01), batch 16
(train: shuffle + drop_last; val: in order), a validation pass with per-batch `.item()` after
every epoch. Written as the seed writes it: a map-style Dataset, two DataLoaders, `y.squeeze()`.

Changed from the seed, only so that both contenders train on the same numbers:
- SimpleDataset draws its samples once from a seeded generator, as pipeforge's `simple.random`
  does (the seed drew a fresh random sample inside every `__getitem__`); labels keep the seed's
  shape (1,), hence its `y.squeeze()`.
- `torch.manual_seed` before building the model, so the initial weights equal pipeforge's.
- EPOCHS and the sizes come from the command line (the seed: 100 epochs, 1000/100 samples).
The last stdout line is `BENCH_RESULT {json}` for benchmarks/run.py; the time covers the
training loop only (train + validation of every epoch), not imports or building.
"""

import argparse
import json
import time

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BATCH_SIZE = 16
LEARNING_RATE = 0.01


class SimpleModel(nn.Module):
    def __init__(self):
        super(SimpleModel, self).__init__()
        self.fc = nn.Linear(10, 2)

    def forward(self, x):
        return self.fc(x)


class SimpleDataset(Dataset):
    def __init__(self, x, y):
        self.x = x  # Shape: (size, 10); float32
        self.y = y  # Shape: (size,); int64

    def __len__(self):
        return len(self.x)

    def __getitem__(self, idx):
        return self.x[idx], self.y[idx : idx + 1]  # Shapes: (10,), (1,) as in the seed


def make_datasets(n_train, n_val, seed):
    # The same draws as pipeforge's simple.random: train x, train y, then val x, val y.
    generator = torch.Generator().manual_seed(seed)

    def samples(count):
        x = torch.randn(count, 10, generator=generator)
        y = torch.randint(0, 2, (count,), generator=generator)
        return SimpleDataset(x, y)

    return samples(n_train), samples(n_val)


def train(epochs, n_train, n_val, seed):
    torch.manual_seed(seed)
    train_dataset, val_dataset = make_datasets(n_train, n_val, seed)
    model = SimpleModel().to(DEVICE)
    train_dataloader = DataLoader(train_dataset, batch_size=BATCH_SIZE, shuffle=True, drop_last=True)
    val_dataloader = DataLoader(val_dataset, batch_size=BATCH_SIZE, shuffle=False, drop_last=False)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)

    started = time.perf_counter()
    steps = 0
    for epoch in range(epochs):
        model.train()
        for i, (x, y) in enumerate(train_dataloader):
            x, y = x.to(DEVICE), y.to(DEVICE)
            optimizer.zero_grad()
            y_pred = model(x)
            loss = criterion(y_pred, y.squeeze())
            loss.backward()
            optimizer.step()
            steps += 1

        model.eval()
        with torch.no_grad():
            total_loss = 0
            total_correct = 0
            total_samples = 0
            for i, (x, y) in enumerate(val_dataloader):
                x, y = x.to(DEVICE), y.to(DEVICE)
                y_pred = model(x)
                loss = criterion(y_pred, y.squeeze())
                total_loss += loss.item() * y.size(0)  # the seed summed batch means; we weigh them
                total_correct += (y_pred.argmax(dim=1) == y.squeeze(1)).sum().item()
                total_samples += y.size(0)
            accuracy = total_correct / total_samples
            print(f"Epoch: {epoch}, Loss: {total_loss / total_samples}, Accuracy: {accuracy}")
    elapsed = time.perf_counter() - started
    return {"train_s": elapsed, "steps": steps, "samples": steps * BATCH_SIZE, "accuracy": accuracy}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-val", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = train(args.epochs, args.n_train, args.n_val, args.seed)
    result["threads"] = torch.get_num_threads()
    print("BENCH_RESULT " + json.dumps(result))
