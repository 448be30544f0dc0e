"""What the package says it exports, it exports (a name in __all__ that raises is a lie)."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = [
    "fedlab",
    "fedlab.data",
    "fedlab.models",
    "fedlab.federated",
    "fedlab.optimize",
    "fedlab.privacy",
]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_in_all_resolves(package) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{package}.__all__ names what it does not have: {missing}"


def test_the_readme_s_trainable_export_is_where_the_readme_says() -> None:
    from fedlab.optimize import export_trainable_tflite

    assert callable(export_trainable_tflite)
