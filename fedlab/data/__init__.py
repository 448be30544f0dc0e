"""Datasets (bundled digits, synthetic IoT sensors, local public sets) and partitioners."""

from fedlab.data.arrays import LabeledArrays
from fedlab.data.digits import load_digits
from fedlab.data.federated_dataset import (
    ClientData,
    FederatedDataset,
    federate,
    federated_digits,
    federated_sensors,
)
from fedlab.data.loaders import load_leaf_femnist, load_uci_har
from fedlab.data.partition import (
    partition_by_group,
    partition_dirichlet,
    partition_iid,
    partition_quantity_skew,
    partition_shards,
)
from fedlab.data.sensors import ACTIVITIES, SensorFleetConfig, generate_sensor_fleet

__all__ = [
    "ACTIVITIES",
    "ClientData",
    "FederatedDataset",
    "LabeledArrays",
    "SensorFleetConfig",
    "federate",
    "federated_digits",
    "federated_sensors",
    "generate_sensor_fleet",
    "load_digits",
    "load_leaf_femnist",
    "load_uci_har",
    "partition_by_group",
    "partition_dirichlet",
    "partition_iid",
    "partition_quantity_skew",
    "partition_shards",
]
