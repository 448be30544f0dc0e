"""Live federated rounds in JupyterLab — the only fedlab package that imports ipywidgets."""

from __future__ import annotations

from fedlab.ui.client_grid import CLIENT_STATES, ClientStates, render_client_grid
from fedlab.ui.dashboard import FederationDashboard
from fedlab.ui.runner import RoundError, RoundRunner
from fedlab.ui.settings import DashboardSettings, apply_settings, build_strategy

__all__ = [
    "CLIENT_STATES",
    "ClientStates",
    "DashboardSettings",
    "FederationDashboard",
    "RoundError",
    "RoundRunner",
    "apply_settings",
    "build_strategy",
    "render_client_grid",
]
