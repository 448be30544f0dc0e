"""fedlab.secure runs where TensorFlow cannot be imported (a board), without flwr."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = """
import sys
for name in ("tensorflow", "keras", "tf_keras", "flwr", "Crypto"):
    sys.modules[name] = None   # importing any of these now raises ImportError
import json
import numpy as np
import fedlab.secure as s
setup = s.RoundSetup.create(
    s.SecAggConfig(threshold=3, clip=1.0, max_examples=10),
    round_index=1, cohort=range(5), dimension=8,
)
updates = {c: np.full(8, 0.1 * c) for c in range(5)}
out = s.run_round(setup, updates, dict.fromkeys(range(5), 10), drop={"masked_input": {4}})
ident = s.DeviceIdentity.generate(1)
reg = s.IdentityRegistry(); reg.enrol(1, ident.public_bytes)
u = ident.sign_update(round_index=1, model_version="v" * 64, num_examples=3, payload=b"p")
v = s.UpdateVerifier(reg).verify(u, round_index=1, model_version="v" * 64)
loaded = sorted(m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] in
                ("tensorflow", "keras", "tf_keras", "flwr", "Crypto", "scipy", "sklearn"))
print(json.dumps({"sum": out.result.total.tolist(), "accepted": v.accepted, "loaded": loaded}))
"""


def test_secure_package_imports_and_runs_with_tensorflow_and_flwr_blocked():
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_USE_LEGACY")}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["accepted"] is True
    assert report["loaded"] == []
    expected = 10 * 0.1 * (0 + 1 + 2 + 3)  # weighted by 10 examples each, client 4 dropped
    assert all(abs(x - expected) < 1e-5 for x in report["sum"])
