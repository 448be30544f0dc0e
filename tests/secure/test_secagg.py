"""SecAgg+ rounds: the exact sum under any dropout pattern the threshold allows, a clear
failure (and no result) otherwise, masked vectors that look uniform, strict messages."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlab.secure import (
    ADVERTISE,
    MASKED_INPUT,
    SHARE,
    STAGES,
    UNMASK,
    DeviceIdentity,
    IdentityRegistry,
    MaskedInput,
    RoundSetup,
    SecAggAborted,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    UnmaskRequest,
    plain_sum,
    run_round,
    uniformity,
)

MAX_EXAMPLES = 50


def cohort_data(setup: RoundSetup, seed: int):
    rng = np.random.default_rng(seed)
    updates = {c: rng.normal(0, 0.5, setup.dimension) for c in setup.cohort}
    counts = {c: int(rng.integers(0, 2 * MAX_EXAMPLES)) for c in setup.cohort}
    return updates, counts


def oracle(setup: RoundSetup, drops: dict[str, set[int]]):
    """The outcome the protocol promises, computed from the graph alone.

    Returns ``(failed stage or None, contributors)``.
    """
    g, t, floor = setup.neighbours(), setup.config.threshold, setup.min_survivors

    def prune(alive):
        while weak := {c for c in alive if len(g[c] & alive) < t}:
            alive = alive - weak
        return alive

    gone = set()
    alive = set(setup.cohort)
    for stage in (ADVERTISE, SHARE):
        gone |= drops.get(stage, set())
        alive = prune(alive - gone)
        if len(alive) < floor:
            return stage, None
    holders = alive
    gone |= drops.get(MASKED_INPUT, set())
    survivors = holders - gone
    if len(survivors) < floor or any(len(g[c] & survivors) < t for c in holders):
        return MASKED_INPUT, None
    gone |= drops.get(UNMASK, set())
    helpers = survivors - gone
    if any(len(g[c] & helpers) < t for c in holders):
        return UNMASK, None
    return None, survivors


@st.composite
def rounds(draw):
    n = draw(st.integers(3, 11))
    k = draw(st.sampled_from([n - 1, *range(2, n - 1, 2)]))
    t = draw(st.integers(k // 2 + 1, k))
    cohort = draw(st.lists(st.integers(0, 999), min_size=n, max_size=n, unique=True))
    stage_of = draw(st.lists(st.sampled_from([*[None] * 12, *STAGES]), min_size=n, max_size=n))
    drops: dict[str, set[int]] = {s: set() for s in STAGES}
    for c, s in zip(cohort, stage_of, strict=True):
        if s is not None:
            drops[s].add(c)
    config = SecAggConfig(
        threshold=t,
        clip=1.0,
        num_neighbours=k,
        max_examples=MAX_EXAMPLES,
        ring_bits=draw(st.sampled_from([32, 64])),
        weighted=draw(st.booleans()),
    )
    seed = draw(st.binary(min_size=16, max_size=16))
    setup = RoundSetup.create(config, round_index=7, cohort=cohort, dimension=12, seed=seed)
    return setup, drops, draw(st.integers(0, 2**16))


@settings(derandomize=True, max_examples=120, deadline=None)
@given(case=rounds())
def test_secure_sum_equals_plain_sum_or_fails_exactly_when_the_threshold_is_missed(case):
    setup, drops, seed = case
    updates, counts = cohort_data(setup, seed)

    out = run_round(setup, updates, counts, drop=drops)

    failed_at, contributors = oracle(setup, drops)
    assert out.client_refusals == []  # an honest server never asks a client to refuse
    if failed_at is not None:
        assert not out.ok and out.result is None
        assert out.failure is not None and out.failure.stage == failed_at and out.failure.reason
        assert out.server.failure is out.failure
        return
    assert out.ok, out.failure
    r = out.result
    assert set(r.contributors) == contributors
    expected, examples = plain_sum({c: updates[c] for c in contributors}, counts, setup.codec)
    assert r.num_examples == examples
    assert np.max(np.abs(r.total - expected)) <= r.error_bound
    lost = set().union(*(set(v) for v in r.dropped.values()))
    assert contributors.isdisjoint(lost - set(r.dropped[UNMASK]))


def make_setup(n=8, k=None, t=4, dimension=64, round_index=1, **kw):
    config = SecAggConfig(threshold=t, clip=1.0, num_neighbours=k, max_examples=MAX_EXAMPLES, **kw)
    return RoundSetup.create(
        config,
        round_index=round_index,
        cohort=range(10, 10 + n),
        dimension=dimension,
        seed=b"s" * 32,
    )


def test_weighted_fedavg_under_secure_aggregation_matches_plain_weighted_fedavg():
    setup = make_setup(n=10, t=6, dimension=500)
    updates, counts = cohort_data(setup, 3)
    out = run_round(setup, updates, counts, drop={MASKED_INPUT: {12, 15}, UNMASK: {11}})
    r = out.result
    survivors = [c for c in setup.cohort if c not in (12, 15)]
    w = np.array([min(counts[c], MAX_EXAMPLES) for c in survivors], dtype=float)
    x = np.stack([np.clip(updates[c], -1, 1) for c in survivors])
    plain = (w[:, None] * x).sum(0) / w.sum()
    assert r.contributors == tuple(survivors)
    assert np.max(np.abs(r.mean() - plain)) <= r.error_bound / w.sum()


@pytest.mark.parametrize(
    ("stage", "dropped", "message"),
    [
        (ADVERTISE, {10, 11, 12, 13}, "pruned for fewer than 4 live neighbours: [14, 15"),
        (SHARE, {10, 11, 12, 13}, "0 clients left, at least 5 needed"),
        (MASKED_INPUT, {10, 11, 12, 13}, "4 clients left, at least 5 needed"),
        (UNMASK, {10, 11, 12, 13}, "cannot reconstruct the self-mask seed"),
    ],
)
def test_below_threshold_at_each_stage_fails_with_a_reason_and_nothing_applied(
    stage, dropped, message
):
    setup = make_setup(n=8, t=4)  # complete graph: k = 7
    updates, counts = cohort_data(setup, 0)
    out = run_round(setup, updates, counts, drop={stage: dropped})
    assert out.result is None and out.failure.stage == stage
    assert message in out.failure.reason and message in str(out.failure)
    with pytest.raises(SecAggAborted) as again:  # the aborted server stays aborted
        out.server.receive_unmask_responses([])
    assert again.value is out.failure


def test_masked_vectors_look_uniform_while_the_encoding_does_not():
    setup = make_setup(n=5, t=3, dimension=40_000)
    updates = {c: np.full(setup.dimension, 0.25) for c in setup.cohort}
    out = run_round(setup, updates, dict.fromkeys(setup.cohort, 10), keep_masked=True)
    assert out.ok
    for vec in out.masked.values():
        # chi-square over the top 6 bits: |z| < 6 fails a uniform vector about once in 1e9
        assert abs(uniformity(vec[1:])["z"]) < 6
        assert abs(np.corrcoef(vec[1:].astype(float), np.arange(vec.size - 1))[0, 1]) < 0.05
    assert uniformity(setup.codec.encode(updates[10], 10)[1:])["z"] > 100  # the test can tell


def test_sparse_secagg_plus_graph_recovers_from_dropouts_at_every_stage():
    setup = make_setup(n=30, k=10, t=6, dimension=100)
    updates, counts = cohort_data(setup, 5)
    drops = {ADVERTISE: {10}, SHARE: {20}, MASKED_INPUT: {30, 31}, UNMASK: {35}}
    out = run_round(setup, updates, counts, drop=drops)
    assert out.ok, out.failure
    expected, _ = plain_sum({c: updates[c] for c in out.result.contributors}, counts, setup.codec)
    assert np.max(np.abs(out.result.total - expected)) <= out.result.error_bound
    assert out.result.dropped[MASKED_INPUT] == (30, 31)
    # each client's upload is dominated by its masked vector; shares go to k neighbours only
    assert max(out.upload_bytes.values()) < 4 * 101 + 10 * 300 + 200


def test_integer_noise_hook_lands_in_the_unmasked_sum():
    setup = make_setup(n=6, t=4, noise_bound=3)
    updates, counts = cohort_data(setup, 1)
    out = run_round(setup, updates, counts, noise=lambda q: np.ones(q.shape, dtype=np.int64))
    expected, _ = plain_sum(updates, counts, setup.codec)
    step = setup.codec.resolution * MAX_EXAMPLES
    np.testing.assert_allclose(out.result.total - expected, 6 * step, atol=out.result.error_bound)


def test_signed_key_advertisements_refuse_forged_and_unknown_clients_only():
    setup = make_setup(n=8, t=4)
    ids = {c: DeviceIdentity.generate(c) for c in setup.cohort}
    registry = IdentityRegistry()
    for c in setup.cohort[:-1]:  # 17 is not enrolled
        registry.enrol(c, ids[c].public_bytes)
    ids[10] = DeviceIdentity.generate(10)  # 10 signs with a key the server does not know
    updates, counts = cohort_data(setup, 2)
    out = run_round(setup, updates, counts, identities=ids, registry=registry)
    assert out.ok and set(out.result.contributors) == set(range(11, 17))
    reasons = {cid: why for cid, stage, why in out.server.refused if stage == ADVERTISE}
    assert reasons[10].startswith("forged") and reasons[17] == "unknown client 17"


def test_server_refuses_stray_messages_and_keeps_going():
    setup = make_setup(n=6, t=3)
    other = make_setup(n=6, t=3, round_index=2)
    server = SecAggServer(setup)
    clients = {c: SecAggClient(setup, c) for c in setup.cohort}
    msgs = [cl.advertise_keys() for cl in clients.values()]
    stale = SecAggClient(other, 10).advertise_keys()
    broadcasts = server.receive_advertisements([*msgs, msgs[0], stale, "junk"])
    assert set(broadcasts) == set(setup.cohort)
    assert [why for _, _, why in server.refused] == [
        "duplicate message",
        "for round 2",
        "wrong message type",
    ]
    with pytest.raises(RuntimeError, match="expects share_keys"):
        server.receive_masked_inputs([])


def test_a_client_refuses_an_unmask_request_naming_a_client_both_ways():
    setup = make_setup(n=5, t=3)
    server = SecAggServer(setup)
    clients = {c: SecAggClient(setup, c) for c in setup.cohort}
    b = server.receive_advertisements([cl.advertise_keys() for cl in clients.values()])
    d = server.receive_shares([clients[c].share_keys(b[c]) for c in b])
    updates, counts = cohort_data(setup, 0)
    server.receive_masked_inputs([clients[c].masked_input(d[c], updates[c], counts[c]) for c in d])
    with pytest.raises(SecAggAborted, match=r"\[11\] listed as survivor and dropped"):
        clients[10].unmask(UnmaskRequest(1, frozenset({11, 12}), frozenset({11})))


@pytest.mark.parametrize(
    ("kwargs", "error", "quoted"),
    [
        ({"threshold": 0, "clip": 1.0}, ValueError, "0"),
        ({"threshold": 2.0, "clip": 1.0}, TypeError, "2.0"),
        ({"threshold": 2, "clip": 0}, ValueError, "0"),
        ({"threshold": 2, "clip": 1.0, "num_neighbours": 1}, ValueError, "1"),
        ({"threshold": 2, "clip": 1.0, "ring_bits": 8}, ValueError, "8"),
    ],
)
def test_config_refuses_bad_values_and_quotes_them(kwargs, error, quoted):
    with pytest.raises(error, match=quoted):
        SecAggConfig(**kwargs)


def test_setup_refuses_a_threshold_without_a_majority_and_round_trips_config():
    config = SecAggConfig(threshold=3, clip=1.0)
    with pytest.raises(ValueError, match="k//2 < t <= k for degree k=7 .* got t=3"):
        RoundSetup.create(config, round_index=0, cohort=range(8), dimension=4)
    with pytest.raises(ValueError, match=r"distinct, got \(1, 1, 2\)"):
        RoundSetup.create(config, round_index=0, cohort=[1, 1, 2], dimension=4)
    assert SecAggConfig.from_dict(config.to_dict()) == config


def test_the_sum_is_bit_identical_whatever_the_masks_and_survives_a_signed_wire_trip():
    setup = make_setup(n=6, t=4, dimension=300)
    updates, counts = cohort_data(setup, 4)
    first = run_round(setup, updates, counts, keep_masked=True)
    second = run_round(setup, updates, counts, drop={UNMASK: {12}})
    np.testing.assert_array_equal(first.result.total, second.result.total)  # fresh keys, same sum
    ident = DeviceIdentity.generate(10)
    msg = MaskedInput(10, 1, first.masked[10])
    signed = ident.sign_update(
        round_index=1, model_version="v" * 64, num_examples=0, payload=msg.payload()
    )
    back = MaskedInput.from_payload(setup, 10, signed.payload)
    np.testing.assert_array_equal(back.vector, msg.vector)
    with pytest.raises(ValueError, match="expects 1204"):
        MaskedInput.from_payload(setup, 10, signed.payload[:-1])
