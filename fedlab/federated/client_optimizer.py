"""The constants of the client optimizers, defined once for every trainer.

The reference and vectorised runtimes must take the same steps (their updates are compared
to float tolerance), so the Adam constants live here rather than typed into each trainer.
No TensorFlow: a device trainer can import this too.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ADAM", "AdamConstants"]


@dataclass(frozen=True, slots=True)
class AdamConstants:
    """Adam (Kingma & Ba 2015) with bias correction: ``β1``, ``β2`` and ``ε``."""

    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7

    def __post_init__(self) -> None:
        for name in ("beta_1", "beta_2"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if not self.epsilon > 0.0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon!r}")

    @property
    def one_minus_beta_1(self) -> float:
        """``1 − β1``: the weight of the new gradient in the first moment."""
        return 1.0 - self.beta_1

    @property
    def one_minus_beta_2(self) -> float:
        """``1 − β2``: the weight of the new squared gradient in the second moment."""
        return 1.0 - self.beta_2


ADAM = AdamConstants()
