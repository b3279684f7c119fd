"""pytorch_check.py MODEL.safetensors MNIST_DIR [TEST_LIMIT]: loads a model file
written by worker/paramserver into the PyTorch module of the model its metadata
names (tests/pytorch_model.py; simpleconvnet when the file names none) with
load_state_dict(strict=True), prints its test accuracy as PyTorch computes it
on the first TEST_LIMIT test images (default all) and fails (exit 1) when it
differs from the accuracy the file's metadata records by more than one image.
Needs PyTorch (Debian: apt-get install python3-torch; run with /usr/bin/python3).
Reads safetensors with its own 10-line reader: the safetensors package is not
in Debian 12."""
import json, struct, sys
import numpy as np
import torch
from pytorch_model import MODELS, load_mnist, accuracy

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
state, meta = load_safetensors(model_path)
name = meta.get("model", "simpleconvnet")
if name not in MODELS:
    sys.exit(f"{model_path}: model '{name}' is not one of {', '.join(MODELS)} (tests/pytorch_model.py)")
m = MODELS[name]()
m.load_state_dict(state, strict=True)
x, y = load_mnist(mnist, "t10k")
if len(sys.argv) > 3 and int(sys.argv[3]) > 0:
    x, y = x[:int(sys.argv[3])], y[:int(sys.argv[3])]
acc = accuracy(m, x, y)
print(f"pytorch: {type(m).__name__}: load_state_dict(strict=True) ok; test accuracy {acc:.2f}% "
      f"on {len(y)} images (file metadata says {meta.get('test_accuracy', '?')}%)")
if "test_accuracy" in meta and abs(acc - float(meta["test_accuracy"])) > 100.0 / len(y) + 0.005:
    sys.exit(f"{model_path}: PyTorch's accuracy {acc:.2f}% differs from ours "
             f"({meta['test_accuracy']}%) by more than one image of {len(y)}")
