"""Baseline C: the same model as a hand-written PyTorch CPU training loop.

    python benchmarks/torch_baseline.py --model lenet5 --data-dir DIR --epochs 10 --batch-size 128 \
        --learning-rate 0.002 --out c.json

The images are preprocessed once into float32 tensors (the same scaling, standardization and
bilinear resize as the Keras versions); each epoch draws a random permutation and slices batches
from it. Adam (Keras' epsilon) with a per-step cosine schedule, cross-entropy on logits. The
held-out images are evaluated each epoch (timed, like Keras' validation); the test set outside the
timed path.
"""

import time

import torch
import torch.nn.functional as F
from torch import nn

from common import Report, arguments, learning_rate, load_mnist

args = arguments(__doc__.splitlines()[0], threads=True)
torch.manual_seed(42)
if args.threads:
    torch.set_num_threads(args.threads)
data = load_mnist(args.data_dir)


def preprocess(images):
    x = (torch.tensor(images).float() / 255.0 - args.mean) / args.std
    if args.model == "lenet5":
        x = F.interpolate(x[:, None], size=(32, 32), mode="bilinear", align_corners=False)
    return x


n_train = len(data["x_train"]) - args.validation
x_all, y_all = preprocess(data["x_train"]), torch.from_numpy(data["y_train"])
x_train, y_train, x_val, y_val = x_all[:n_train], y_all[:n_train], x_all[n_train:], y_all[n_train:]
x_test, y_test = preprocess(data["x_test"]), torch.from_numpy(data["y_test"])

if args.model == "lenet5":
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )
else:
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                          nn.Linear(128, 10))

steps_per_epoch = -(-n_train // args.batch_size)
optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate, eps=1e-7)
scheduler = torch.optim.lr_scheduler.LambdaLR(
    optimizer, lambda step: learning_rate(args, step, steps_per_epoch) / args.learning_rate)


@torch.no_grad()
def accuracy(x, y):
    model.eval()
    correct = sum((model(xb).argmax(1) == yb).sum().item()
                  for xb, yb in zip(x.split(1000), y.split(1000)))
    return correct / len(x)


report = Report(args.out, n_train)
for epoch in range(args.epochs):
    start = time.perf_counter()
    model.train()
    order = torch.randperm(n_train)
    for i in range(0, n_train, args.batch_size):
        idx = order[i:i + args.batch_size]
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    train_end = time.perf_counter()
    val_accuracy = accuracy(x_val, y_val)
    end = time.perf_counter()
    test_accuracy = accuracy(x_test, y_test)
    report.epoch(train_end - start, end - start, test_accuracy, time.perf_counter() - end)
    print(f"epoch {epoch + 1}: loss {loss.item():.4f}, val_accuracy {val_accuracy:.4f}, "
          f"{train_end - start:.1f} s", flush=True)
