"""The protocol imports and works on a device: no TensorFlow, no round engine."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
sys.modules['tensorflow'] = None
sys.modules['fedlab.federated'] = None
import numpy as np
from fedlab.protocol import RoundTask, TrainPlan, UpdateEnvelope, decode, encode
task = RoundTask(round_index=1, model_version='v', plan=TrainPlan(epochs=1, batch_size=2,
                 learning_rate=0.1), weights=(np.ones(3, np.float32),))
assert decode(encode(task)) == task
env = UpdateEnvelope(client_id=0, round_index=1, model_version='v',
                     base_version=task.base_version, num_examples=1, body=(np.ones(3),))
assert decode(encode(env)) == env
loaded = sorted(m for m in sys.modules if m.startswith(('tensorflow', 'fedlab.federated',
                                                         'keras')) and sys.modules[m])
print('loaded', loaded)
"""


def test_the_protocol_needs_neither_tensorflow_nor_the_round_engine() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "loaded []"
