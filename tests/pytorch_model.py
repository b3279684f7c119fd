"""pytorch_model.py: SimpleConvNet as the original study defines it, and
MNIST as PyTorch tensors, shared by pytorch_train.py and pytorch_check.py.
(fixtures/make_pytorch_reference.py keeps its own copy: it is the record of
how the fixture was made.)"""
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

def load_mnist(d, split):
    """Images normalised as in the study, (pixel/255 - 0.1307) / 0.3081, and labels."""
    im = np.frombuffer(open(f"{d}/{split}-images-idx3-ubyte", "rb").read(), np.uint8, offset=16)
    lb = np.frombuffer(open(f"{d}/{split}-labels-idx1-ubyte", "rb").read(), np.uint8, offset=8)
    x = (torch.from_numpy(im.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0) - 0.1307) / 0.3081
    return x, torch.from_numpy(lb.astype(np.int64))

def accuracy(m, x, y):
    """Test accuracy in percent, in batches of 1000."""
    with torch.no_grad():
        return 100.0 * sum((m(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum().item()
                           for i in range(0, len(y), 1000)) / len(y)
