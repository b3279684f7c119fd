"""pytorch_model.py: the models of the catalogue (common/models.c) as
torch.nn.Modules whose state_dicts match the files worker/paramserver save
(load them with load_state_dict(strict=True)), and MNIST as PyTorch tensors;
shared by pytorch_train.py, pytorch_check.py and fixtures/make_model_fixtures.py.
(fixtures/make_pytorch_reference.py keeps its own copy of SimpleConvNet: it is
the record of how that fixture was made.)"""
import json, struct
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

class LeNet5(nn.Module):
    """LeNet-5 as commonly written for MNIST: padding 2 keeps 28x28; ReLU, max-pool."""
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2); self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120); self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10); self.pool = nn.MaxPool2d(2); self.relu = nn.ReLU()
    def forward(self, x):
        x = self.pool(self.relu(self.conv1(x))); x = self.pool(self.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))

class MLP(nn.Module):
    """784-1024-1024-10 with ReLU."""
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 1024); self.fc2 = nn.Linear(1024, 1024)
        self.fc3 = nn.Linear(1024, 10); self.relu = nn.ReLU()
    def forward(self, x):
        x = torch.flatten(x, 1)
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))

class WideCNN(nn.Module):
    """conv 3x3 64, conv 3x3 128, max-pool, dropout 0.25, fc 512, dropout 0.5, fc 10."""
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, 3); self.conv2 = nn.Conv2d(64, 128, 3)
        self.fc1 = nn.Linear(128 * 12 * 12, 512); self.fc2 = nn.Linear(512, 10)
        self.pool = nn.MaxPool2d(2); self.relu = nn.ReLU()
        self.drop1 = nn.Dropout(0.25); self.drop2 = nn.Dropout(0.5)
    def forward(self, x):
        x = self.pool(self.relu(self.conv2(self.relu(self.conv1(x)))))
        x = torch.flatten(self.drop1(x), 1)
        return self.fc2(self.drop2(self.relu(self.fc1(x))))

# By the names worker --model and paramserver --model take.
MODELS = {"simpleconvnet": SimpleConvNet, "lenet5": LeNet5, "mlp": MLP, "widecnn": WideCNN}

def load_mnist(d, split):
    """Images normalised as in the study, (pixel/255 - 0.1307) / 0.3081, and labels."""
    im = np.frombuffer(open(f"{d}/{split}-images-idx3-ubyte", "rb").read(), np.uint8, offset=16)
    lb = np.frombuffer(open(f"{d}/{split}-labels-idx1-ubyte", "rb").read(), np.uint8, offset=8)
    x = (torch.from_numpy(im.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0) - 0.1307) / 0.3081
    return x, torch.from_numpy(lb.astype(np.int64))

def accuracy(m, x, y):
    """Test accuracy in percent, in batches of 1000 (eval mode: no dropout)."""
    m.eval()
    with torch.no_grad():
        return 100.0 * sum((m(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum().item()
                           for i in range(0, len(y), 1000)) / len(y)

def save_safetensors(path, tensors):
    """Writes {name: (dtype, numpy array)} as a safetensors file (the fixtures)."""
    header, blobs, off = {}, [], 0
    for name, (dtype, arr) in tensors.items():
        b = arr.tobytes(); header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b); off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h); f.write(b"".join(blobs))
