"""W2 reference: seed 002's hand-written loop ("Model Training with PyTorch", pytorch-demo.py).

SimpleNet 2-32-2 predicting `price + rating > 10`, 800 train / 200 test products, batch 32
(train shuffled), CrossEntropyLoss, SGD(lr=0.01), 10 epochs. As the seed: a TensorDataset in a
DataLoader, `loss.item()` twice per step, `writer.add_scalar('Loss/train', ...)` every step
and the test accuracy (per-batch `.item()`) every epoch, logged as `Accuracy/test`.

Changed from the seed, only so that both contenders train on the same numbers:
- The products are drawn from a seeded torch generator in the seed's order (all prices, then
  all ratings, per split), as pipeforge's `popularity.products` does; the seed used numpy's
  unseeded global state. `torch.manual_seed` before the model, so initial weights match too.
- The TensorBoard log dir is `--log-dir` (the seed: /root/tensorboard-logs); `--no-tensorboard`
  drops the writer for a comparison without logging. The single-sample prediction is kept.
The last stdout line is `BENCH_RESULT {json}`; the time covers `train(...)` only.
"""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.optim as optim
from torch.utils.data import DataLoader, TensorDataset


def generate_data(num_samples, generator):
    def uniform(low, high):
        return torch.rand(num_samples, 1, generator=generator, dtype=torch.float64) * (high - low) + low

    prices = uniform(1.0, 10.0)
    ratings = uniform(1.0, 5.0)
    labels = (prices + ratings > 10).long().reshape(-1)
    X = torch.cat([prices, ratings], dim=1).float()
    return X, labels


class SimpleNet(nn.Module):
    def __init__(self):
        super(SimpleNet, self).__init__()
        self.fc1 = nn.Linear(2, 32)
        self.fc2 = nn.Linear(32, 2)

    def forward(self, x):
        x = torch.relu(self.fc1(x))
        x = self.fc2(x)
        return x


class NoWriter:
    def add_scalar(self, *args):
        pass

    def close(self):
        pass


def train(model, train_loader, test_loader, criterion, optimizer, device, writer, epochs):
    steps = 0
    for epoch in range(epochs):
        model.train()  # pipeforge switches modes every epoch; so do we (the seed did it once)
        total_loss = 0
        for i, (data, labels) in enumerate(train_loader):
            data, labels = data.to(device), labels.to(device)
            optimizer.zero_grad()
            outputs = model(data)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
            writer.add_scalar('Loss/train', loss.item(), epoch * len(train_loader) + i)
            steps += 1
        average_loss = total_loss / len(train_loader)
        accuracy = test(model, test_loader, device, writer, epoch)
        print(f'Epoch [{epoch + 1}/{epochs}], Average Loss: {average_loss:.4f}, Accuracy: {accuracy:.2f}%')
    return steps, accuracy / 100


def test(model, test_loader, device, writer, epoch):
    model.eval()
    correct = 0
    total = 0
    with torch.no_grad():
        for data, labels in test_loader:
            data, labels = data.to(device), labels.to(device)
            outputs = model(data)
            _, predicted = torch.max(outputs, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    accuracy = 100 * correct / total
    writer.add_scalar('Accuracy/test', accuracy, epoch)
    return accuracy


def predict(model, sample, device):
    model.eval()
    with torch.no_grad():
        sample = torch.tensor(sample, dtype=torch.float32).to(device)
        output = model(sample)
        _, predicted = torch.max(output, 1)
        return predicted.item()


def main(args):
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if args.no_tensorboard:
        writer = NoWriter()
    else:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=args.log_dir)

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    X_train, y_train = generate_data(args.n_train, generator)
    X_test, y_test = generate_data(args.n_test, generator)
    train_loader = DataLoader(TensorDataset(X_train, y_train), batch_size=32, shuffle=True)
    test_loader = DataLoader(TensorDataset(X_test, y_test), batch_size=32, shuffle=False)

    model = SimpleNet().to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.01)

    started = time.perf_counter()
    steps, accuracy = train(model, train_loader, test_loader, criterion, optimizer, device, writer, args.epochs)
    elapsed = time.perf_counter() - started

    sample = [[7.5, 3.0]]
    prediction = predict(model, sample, device)
    print(f'Prediction for sample {sample}: {"Popular" if prediction == 1 else "Not Popular"}')
    writer.close()
    return {"train_s": elapsed, "steps": steps, "samples": args.epochs * args.n_train, "accuracy": accuracy}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--n-train", type=int, default=800)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", default="tensorboard-logs")
    parser.add_argument("--no-tensorboard", action="store_true")
    args = parser.parse_args()
    result = main(args)
    result["threads"] = torch.get_num_threads()
    print("BENCH_RESULT " + json.dumps(result))
