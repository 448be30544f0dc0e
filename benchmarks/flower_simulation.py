"""Flower's simulation engine (flwr 1.23 + Ray) on the simulation benchmark's workload.

digits, Dirichlet α = 0.5, 100 clients all selected every round, 1 local epoch, batch 16,
SGD 0.05, the digits CNN — the same as ``benchmarks/simulation.py``, whose vectorised
seconds per round this is compared with (``build/bench/simulation.json``). Each client is
a Flower ``ClientApp`` that runs Keras ``fit`` on its partition; FedAvg on the server.

Ray is not in fedlab's lock (``flwr[simulation]`` would add it to every install), so this
runs in a venv of its own, built from the same lock::

    python3.11 -m venv /tmp/flsim
    /tmp/flsim/bin/pip install -c requirements.lock "flwr[simulation]==1.23.0" \\
        tensorflow==2.15.1 tf-keras scikit-learn
    TF_ENABLE_ONEDNN_OPTS=0 /tmp/flsim/bin/python benchmarks/flower_simulation.py [ROUNDS]

Without Ray it prints why and exits 0 (so ``make bench`` goes on). Writes
``build/bench/flower_simulation_onednn<0|1|default>.json``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    if importlib.util.find_spec("ray") is None:
        print("skipped: Ray is not installed here (see this script's docstring for its venv)")
        return 0
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import tf_keras as keras
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    from fedlab.data import federated_digits  # numpy only: no fedlab TensorFlow import

    data = federated_digits(num_clients=100, alpha=0.5, seed=0)
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3

    def model() -> Any:  # fedlab.models.digits_cnn, built with plain tf_keras
        init = keras.initializers.GlorotUniform
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Conv2D(
            16, 3, padding="same", activation="relu", kernel_initializer=init(0)
        )(inputs)
        h = keras.layers.Conv2D(
            32, 3, padding="same", activation="relu", kernel_initializer=init(1)
        )(h)
        h = keras.layers.Flatten()(keras.layers.MaxPooling2D(2)(h))
        h = keras.layers.Dense(64, activation="relu", kernel_initializer=init(2))(h)
        m = keras.Model(inputs, keras.layers.Dense(10, kernel_initializer=init(3))(h))
        m.compile(
            optimizer=keras.optimizers.SGD(0.05),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return m

    client = ClientApp()
    cache: dict[str, Any] = {}

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        m = cache.get("model") or cache.setdefault("model", model())  # one per Ray actor
        m.set_weights(msg.content["arrays"].to_numpy_ndarrays())
        c = data.clients[pid]
        m.fit(c.x, c.y, batch_size=16, epochs=1, verbose=0)
        content = RecordDict(
            {
                "arrays": ArrayRecord(m.get_weights()),
                "metrics": MetricRecord({"num-examples": c.num_examples}),
            }
        )
        return Message(content, reply_to=msg)

    server = ServerApp()
    marks: list[float] = []

    @server.main()
    def run(grid: Grid, context: Context) -> None:
        strategy = FedAvg(
            fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=100, min_available_nodes=100
        )

        def mark(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            marks.append(time.time())  # called before round 1 and after every round
            return MetricRecord({})

        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model().get_weights()),
            num_rounds=rounds,
            timeout=900,
            evaluate_fn=mark,
        )

    start = time.time()
    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=100,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False},
        },
    )
    per_round = np.diff(marks).tolist()
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")
    result = {
        "workload": "digits dirichlet0.5, 100 clients/round, 1 epoch, batch 16, digits_cnn",
        "TF_ENABLE_ONEDNN_OPTS": onednn,
        "seconds_including_ray_start": time.time() - start,
        "seconds_per_round": per_round,
        "median_seconds_per_round": float(np.median(per_round)),
    }
    fedlab_json = ROOT / "build" / "bench" / "simulation.json"
    if fedlab_json.is_file():
        settings = json.loads(fedlab_json.read_text()).get("settings", {})
        ours = settings.get(f"TF_ENABLE_ONEDNN_OPTS={onednn}", {}).get("seconds_per_round", {})
        if "vectorized_runtime" in ours:
            result["fedlab_vectorized_seconds_per_round"] = ours["vectorized_runtime"]
            result["flower_over_fedlab"] = result["median_seconds_per_round"] / float(
                ours["vectorized_runtime"]
            )
    out = ROOT / "build" / "bench" / f"flower_simulation_onednn{onednn}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
