"""What the operations layer keeps, for how long, and what per-client data it holds.

The default keeps aggregates only: model versions (the newest ``keep_last`` plus every version
ever promoted or still on a channel or a device), the audit log (forever: it is the record
of what ran where), canary decisions as aggregate statistics, drift alerts, and the cohort
means the drift monitor consumed. :meth:`RetentionPolicy.per_client_data` says, item by item,
which per-client data remains anyway; it is returned as data so a notebook or a review can
show it rather than a comment in the code.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from fedlab.ops.registry import Registry

__all__ = ["RetentionPolicy"]


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Which model versions keep their weights.

    Attributes
    ----------
    keep_last : int
        The newest versions always kept.
    keep_promoted : bool
        Keep every version that was ever promoted to a channel other than ``canary``
        (rollback targets and the audit trail's models).
    """

    keep_last: int = 10
    keep_promoted: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.keep_last, bool) or not isinstance(self.keep_last, int):
            raise ValueError(f"keep_last must be an int >= 1, got {self.keep_last!r}")
        if self.keep_last < 1:
            raise ValueError(f"keep_last must be an int >= 1, got {self.keep_last!r}")
        if not isinstance(self.keep_promoted, bool):
            raise ValueError(f"keep_promoted must be a bool, got {self.keep_promoted!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form."""
        return asdict(self)

    def plan(self, registry: Registry) -> list[str]:
        """Version ids whose weights this policy would purge (oldest first)."""
        versions = [v for v in registry.versions() if not v.purged]
        keep = {v.id for v in versions[-self.keep_last :]}
        keep |= {vid for vid, _ in registry.channels().values()}
        keep |= set(registry.running().values())
        if self.keep_promoted:
            keep |= {
                e.version for e in registry.audit_log(action="promote") if e.channel != "canary"
            }
        return [v.id for v in versions if v.id not in keep]

    def apply(self, registry: Registry) -> list[str]:
        """Purge what :meth:`plan` lists (each purge is in the audit log); returns the ids."""
        purged = self.plan(registry)
        for vid in purged:
            registry.purge(vid, reason=f"retention {self.to_dict()}")
        return purged

    def steady_state_versions(
        self, *, registered_per_month: float, promoted_per_month: float, months: float = 12.0
    ) -> float:
        """Versions with weights on disk after ``months`` of operation."""
        checks = {
            "registered_per_month": registered_per_month,
            "promoted_per_month": promoted_per_month,
            "months": months,
        }
        for name, value in checks.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        total = registered_per_month * months
        kept = min(total, self.keep_last)
        if self.keep_promoted:
            kept = min(total, kept + promoted_per_month * months)
        return kept

    @staticmethod
    def per_client_data() -> dict[str, str]:
        """Per-client (per-device) data the operations layer holds, and for how long."""
        return {
            "registry.devices": "one row per device: its id, the version it last reported "
            "running and when (overwritten by the next report; needed to roll a device back)",
            "audit log": "canary cohorts' device ids (which devices ran an unproven "
            "candidate); no metric of any single device",
            "canary decision": "per-device accuracy differences only in memory for the test "
            "(CanaryDecision.differences); the log keeps the mean, the bound and the count",
            "drift monitor": "nothing per device: devices report one input-shift number each, "
            "the server keeps the cohort mean",
            "federation history (fedlab.federated, not ops)": "per round the ids of invited, "
            "completed, dropped, straggling, failed and rejected clients with rejection "
            "reasons; no update and no metric of a single client",
        }
