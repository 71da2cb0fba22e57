import numpy as np
import pytest
from gyroscope.schedulers.batching import chirality_distance, group_batches
from gyroscope.schedulers.coherence import (
    PHI,
    PhiResolventRegularizer,
    coherence_score,
    entity_coherence,
    phi_resolvent,
)


def test_resolvent_values():
    assert phi_resolvent(0.0) == 1.0
    assert phi_resolvent(1.0) == pytest.approx(1 / (1 + PHI))


def test_coherence_orders_smooth_above_noise():
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(4096)
    smooth = np.sin(np.linspace(0, 8 * np.pi, 4096))
    assert coherence_score(np.ones(64)) == 1.0
    assert coherence_score(np.zeros(10)) == 1.0
    assert coherence_score(smooth) > 0.99
    assert 0.25 < coherence_score(noise) < 0.4  # ~ atan(pi sqrt(phi)) / (pi sqrt(phi))
    assert coherence_score(10 * noise) == pytest.approx(coherence_score(noise))  # amplitude-free
    assert coherence_score(rng.standard_normal((32, 32))) < coherence_score(np.outer(smooth[:32], smooth[:32]))
    assert coherence_score("text") is None and coherence_score([]) is None


def test_entity_coherence_uses_sequency():
    low, high = np.zeros(64), np.zeros(64)
    low[0], high[1] = 1.0, 1.0  # natural-order row 1 of H64 alternates: sequency 63
    assert entity_coherence(low) == 1.0
    assert entity_coherence(high) == pytest.approx(phi_resolvent(np.pi))
    assert entity_coherence(np.zeros(64)) is None and entity_coherence([1, 2]) is None


def test_regularizer_penalises_high_frequency():
    rng = np.random.default_rng(2)
    reg = PhiResolventRegularizer(lambda_reg=1.0)
    noise = rng.standard_normal(2048)
    smooth = np.sin(np.linspace(0, 4 * np.pi, 2048))
    smooth *= np.linalg.norm(noise) / np.linalg.norm(smooth)  # equal energy
    assert reg(noise) > 100 * reg(smooth)
    assert reg(np.full(128, 3.0)) == pytest.approx(0.0, abs=1e-12)
    img = rng.standard_normal((2, 3, 16, 16))  # fft2 over the last two axes with a matching k^2
    smooth_img = np.broadcast_to(np.outer(np.hanning(16), np.hanning(16)), (2, 3, 16, 16))
    smooth_img = smooth_img * np.linalg.norm(img) / np.linalg.norm(smooth_img)
    assert reg(img) > 5 * reg(smooth_img)


def test_chirality_distance():
    assert chirality_distance(0b000000, 0b000011) == 2
    assert chirality_distance(0b111111, 0) == 6


def test_group_batches_spec_example():
    cells = [(1, 5, 0b000000), (2, 5, 0b111111), (3, 7, 0b000001), (4, 9, 0b111111), (5, 9, 0b111110)]
    # sorted by (key, chi6): 1, 2, 3, 5, 4
    batches = group_batches(cells, max_batch_size=8)
    assert batches == [[1, 2, 3], [5, 4]]  # 3 joins: distance(1, chi of cell 1 = 0) = 1
    assert group_batches(cells, 2) == [[1, 2], [3], [5, 4]]


def test_group_batches_partition_property():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 63)), max_size=40), st.integers(1, 6))
    def check(raw, size):
        cells = [(i, k, c) for i, (k, c) in enumerate(raw)]
        batches = group_batches(cells, size)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(cells)))
        by_id = {c[0]: c for c in cells}
        for b in batches:
            assert 1 <= len(b) <= size
            head = by_id[b[0]]
            for i in b[1:]:
                assert by_id[i][1] == head[1] or chirality_distance(by_id[i][2], head[2]) <= 2
    check()
