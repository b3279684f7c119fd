"""pytorch_check.py MODEL.safetensors MNIST_DIR: loads a model file written by
worker/paramserver into PyTorch's SimpleConvNet with load_state_dict(strict=True)
and prints its test accuracy as PyTorch computes it, to compare with ours.
Needs PyTorch (Debian: apt-get install python3-torch; run with /usr/bin/python3).
Reads safetensors with its own 10-line reader: the safetensors package is not
in Debian 12."""
import json, struct, sys
import numpy as np
import torch
from pytorch_model import SimpleConvNet, load_mnist, accuracy

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
x, y = load_mnist(mnist, "t10k")
print(f"pytorch: load_state_dict(strict=True) ok; test accuracy {accuracy(m, x, y):.2f}% "
      f"(file metadata says {meta.get('test_accuracy', '?')}%)")
