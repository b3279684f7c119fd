"""pytorch_train.py MNIST_DIR [EPOCHS] [SEED] [TRAIN_LIMIT] [THREADS]: the original study's
train_basic.py recipe in PyTorch (SimpleConvNet, batch 64 shuffled, SGD lr 0.01
momentum 0.9, test batch 1000), for comparing our speed and accuracy with
PyTorch's on the same machine. Prints per-epoch test accuracy and a summary line
in the same format as `worker --basic`. Needs Debian's python3-torch
(run with /usr/bin/python3)."""
import sys, time
import numpy as np
import torch, torch.nn as nn

class SimpleConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3); self.conv2 = nn.Conv2d(32, 64, 3)
        self.pool = nn.MaxPool2d(2); self.fc1 = nn.Linear(1600, 128)
        self.fc2 = nn.Linear(128, 10); self.relu = nn.ReLU()
    def forward(self, x):
        x = self.pool(self.relu(self.conv1(x))); x = self.pool(self.relu(self.conv2(x)))
        return self.fc2(self.relu(self.fc1(x.view(-1, 1600))))

def load(d, split):
    im = np.frombuffer(open(f"{d}/{split}-images-idx3-ubyte", "rb").read(), np.uint8, offset=16)
    lb = np.frombuffer(open(f"{d}/{split}-labels-idx1-ubyte", "rb").read(), np.uint8, offset=8)
    x = (torch.from_numpy(im.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0) - 0.1307) / 0.3081
    return x, torch.from_numpy(lb.astype(np.int64))

d = sys.argv[1]
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
torch.manual_seed(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
xtr, ytr = load(d, "train"); xte, yte = load(d, "t10k")
if len(sys.argv) > 4 and int(sys.argv[4]) > 0:
    xtr, ytr = xtr[:int(sys.argv[4])], ytr[:int(sys.argv[4])]
if len(sys.argv) > 5:
    torch.set_num_threads(int(sys.argv[5]))
m = SimpleConvNet(); opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
crit = nn.CrossEntropyLoss(); train_s = 0.0; acc = 0.0
for e in range(1, epochs + 1):
    t0 = time.time(); perm = torch.randperm(len(ytr)); m.train()
    for i in range(0, len(ytr), 64):
        idx = perm[i:i + 64]; opt.zero_grad()
        loss = crit(m(xtr[idx]), ytr[idx]); loss.backward(); opt.step()
    train_s += time.time() - t0; m.eval()  # training time only, as worker --basic reports
    with torch.no_grad():
        acc = 100.0 * sum((m(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item() for i in range(0, len(yte), 1000)) / len(yte)
    print(f"epoch {e}/{epochs}: test accuracy {acc:.2f}%, {time.time() - t0:.1f} s", flush=True)
print(f"summary: epochs={epochs} test_accuracy={acc:.2f} train_seconds={train_s:.1f} "
      f"images_per_second={len(ytr) * epochs / train_s:.0f} threads={torch.get_num_threads()}")
