"""Put on ``PYTHONPATH`` of a SuperNode started on the workbench: its whole process tree
(``flower-supernode``, ``flower-superexec``, every ``flwr-clientapp``) then runs without
TensorFlow, as on a board where it is not installed.

Why it is needed: ``import flwr`` imports ``flwr.server.utils.tensorboard``, which imports
TensorFlow whenever it is installed (5–6 s and ~400 MB per process) and catches only
``ModuleNotFoundError``; this finder raises exactly that for the TensorFlow family.
"""

import sys
from importlib.abc import MetaPathFinder

_BLOCKED = frozenset({"tensorflow", "keras", "tf_keras", "tensorboard", "tensorflow_privacy"})


class _NoTensorFlow(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"{name!r} is not installed on the device", name=name)
        return None


sys.meta_path.insert(0, _NoTensorFlow())
