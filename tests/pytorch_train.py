"""pytorch_train.py MNIST_DIR [EPOCHS] [SEED] [TRAIN_LIMIT] [THREADS]: the original study's
train_basic.py recipe in PyTorch (SimpleConvNet, batch 64 shuffled, SGD lr 0.01
momentum 0.9, test batch 1000), for comparing our speed and accuracy with
PyTorch's on the same machine. Prints per-epoch test accuracy and a summary line
in the same format as `worker --basic`. Needs Debian's python3-torch
(run with /usr/bin/python3)."""
import sys, time
import torch, torch.nn as nn
from pytorch_model import SimpleConvNet, load_mnist, accuracy

d = sys.argv[1]
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
torch.manual_seed(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
xtr, ytr = load_mnist(d, "train"); xte, yte = load_mnist(d, "t10k")
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
    acc = accuracy(m, xte, yte)
    print(f"epoch {e}/{epochs}: test accuracy {acc:.2f}%, {time.time() - t0:.1f} s", flush=True)
print(f"summary: epochs={epochs} test_accuracy={acc:.2f} train_seconds={train_s:.1f} "
      f"images_per_second={len(ytr) * epochs / train_s:.0f} threads={torch.get_num_threads()}")
