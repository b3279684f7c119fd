"""pytorch_check.py MODEL.safetensors MNIST_DIR: loads a model file written by
worker/paramserver into PyTorch's SimpleConvNet with load_state_dict(strict=True)
and prints its test accuracy as PyTorch computes it, to compare with ours.
Needs PyTorch (Debian: apt-get install python3-torch; run with /usr/bin/python3).
Reads safetensors with its own 10-line reader: the safetensors package is not
in Debian 12."""
import json, struct, sys
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

def load_safetensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", (name, t["dtype"])
        lo, hi = t["data_offsets"]
        a = np.frombuffer(b[8 + n + lo:8 + n + hi], "<f4").reshape(t["shape"])
        out[name] = torch.from_numpy(a.copy())
    return out, header.get("__metadata__", {})

model_path, mnist = sys.argv[1], sys.argv[2]
m = SimpleConvNet()
state, meta = load_safetensors(model_path)
m.load_state_dict(state, strict=True)
raw = open(mnist + "/t10k-images-idx3-ubyte", "rb").read()
x = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 1, 28, 28).astype(np.float32)
x = (torch.from_numpy(x / 255.0) - 0.1307) / 0.3081
y = torch.from_numpy(np.frombuffer(open(mnist + "/t10k-labels-idx1-ubyte", "rb").read(), np.uint8, offset=8).astype(np.int64))
with torch.no_grad():
    correct = sum((m(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum().item() for i in range(0, len(y), 1000))
print(f"pytorch: load_state_dict(strict=True) ok; test accuracy {100.0 * correct / len(y):.2f}% "
      f"(file metadata says {meta.get('test_accuracy', '?')}%)")
