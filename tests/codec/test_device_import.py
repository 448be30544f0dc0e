"""fedlab.codec runs on a device: it imports and works with TensorFlow blocked, and
imports nothing but numpy and the standard library."""

from __future__ import annotations

import os
import subprocess
import sys

BLOCK_TF = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith(("tensorflow.", "keras", "tf_keras")):
            raise ImportError(f"{name} is blocked: the device layer must not import it")
sys.meta_path.insert(0, Block())
"""

USE = """
import numpy as np
from fedlab.codec import QSGD, ErrorFeedback, ModelDelta, TopK, Zlib, Lzma, chain, decode
codec = ErrorFeedback(chain(TopK(0.1), QSGD(bits=4), Zlib()))
x = (np.arange(12, dtype=np.float32).reshape(3, 4), np.ones(5, np.float32))
payload, state = codec.encode(x, codec.init_state(seed=1))
assert [a.shape for a in decode(payload, [(3, 4), (5,)])] == [(3, 4), (5,)]
assert ModelDelta().decode(ModelDelta().encode(x, x), x)[0].shape == (3, 4)
chain(Lzma()).encode(x, state)
assert "tensorflow" not in sys.modules
third_party = {
    name.split(".")[0] for name in sys.modules
    if name.split(".")[0] not in sys.stdlib_module_names and not name.startswith("_")
}
allowed = {"numpy", "fedlab", "cython_runtime"}  # cython_runtime: numpy's compiled modules
assert third_party <= allowed, sorted(third_party - allowed)
print("ok")
"""


def test_codec_imports_and_runs_with_tensorflow_blocked() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_USE_LEGACY")}
    out = subprocess.run(
        [sys.executable, "-c", BLOCK_TF + USE],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
