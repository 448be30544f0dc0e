"""The cost model's server CPU is measured from the rounds as they ran."""

from __future__ import annotations

import pytest


def test_server_cpu_comes_from_the_rounds_themselves() -> None:
    from fedlab.federated import Federation
    from fedlab.federated.secure_stage import SecureAggregation
    from fedlab.ops import measured_server_cpu
    from fedlab.secure import SecAggConfig
    from tests.federated.test_dispatch import CFG, NumpyRuntime, tiny_fleet

    def rounds(secure):
        fed = Federation(
            data=tiny_fleet(), runtime=NumpyRuntime(), config=CFG, secure_aggregation=secure
        )
        return fed.run(3).rounds

    plain_cpu, plain_cohort = measured_server_cpu(rounds(None))
    secagg = SecureAggregation(SecAggConfig(threshold=3, clip=4.0, max_examples=32, ring_bits=64))
    secure_cpu, secure_cohort = measured_server_cpu(rounds(secagg))
    assert plain_cohort == secure_cohort == CFG.clients_per_round
    assert secure_cpu > plain_cpu > 0  # unmasking costs the server more than a plain sum
    with pytest.raises(ValueError, match="at least one round"):
        measured_server_cpu([])
