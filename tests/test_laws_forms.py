"""Law forms and published constants: the datablations formula to 1e-9, Chinchilla limits, JSON round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest

from datawall.errors import DatawallError
from datawall.laws import PUBLISHED_LAWS, ChinchillaLaw, DataConstrainedLaw, get_law, law_from_json, law_to_json

# the constants printed in the datablations README (log-sum-exp parameterisation)
e, a, b = 0.6254804, 6.255414, 7.3049974
alpha = beta = 0.3526596
rd_star, rn_star = 15.387756, 5.309743


def readme_loss(N: float, D: float, U: float) -> float:
    """The README's formula, written out independently with math (scalars only)."""
    E, A, B = math.exp(e), math.exp(a), math.exp(b)
    G = ((alpha * A) / (beta * B)) ** (1 / (alpha + beta))
    U_D = min(U, D)
    R_D = max(D / U_D - 1, 0.0)
    U_N = min(N, (U_D * G) ** (beta / alpha) * G)
    R_N = max(N / U_N - 1, 0.0)
    N_eff = U_N + U_N * rn_star * (1 - math.exp(-R_N / rn_star))
    D_eff = U_D + U_D * rd_star * (1 - math.exp(-R_D / rd_star))
    return E + A / N_eff**alpha + B / D_eff**beta


CASES = [  # (N, D, U): repeated data, excess parameters, both, U > D, tiny and huge
    (1e9, 100e9, 10e9),
    (8.67e9, 178e9, 13e9),
    (2.81e9, 55e9, 55e9),
    (7.1e6, 900e6, 100e6),
    (1e8, 1e9, 1e12),
    (1e11, 4e12, 1e11),
    (3e7, 3e7, 3e7),
]


@pytest.mark.parametrize("N,D,U", CASES)
def test_published_datablations_law_matches_the_readme_formula(N, D, U):
    law = get_law("datablations-muennighoff2023")
    assert float(law.predict(N, D, U)) == pytest.approx(readme_loss(N, D, U), abs=1e-9, rel=0)


def test_published_datablations_law_is_vectorised():
    law = PUBLISHED_LAWS["datablations-muennighoff2023"]
    N, D, U = (np.array(x) for x in zip(*CASES, strict=True))
    expected = [readme_loss(*c) for c in CASES]
    np.testing.assert_allclose(law.predict(N, D, U), expected, rtol=0, atol=1e-9)


def test_no_repetition_reduces_to_the_chinchilla_form():
    law = get_law("datablations-muennighoff2023")
    E, A, B = math.exp(e), math.exp(a), math.exp(b)
    # U = D and N below the compute-optimal size for D: nothing is repeated, nothing is in excess
    N, D = 1e9, 100e9
    assert N < float(law.optimal_params_for_tokens(D))
    by_hand = E + A / N**alpha + B / D**beta
    assert float(law.predict(N, D, D)) == pytest.approx(by_hand, abs=1e-12)
    assert float(law.predict(N, D)) == pytest.approx(by_hand, abs=1e-12)  # U omitted: all tokens unique
    assert float(law.predict(N, D, 10 * D)) == pytest.approx(by_hand, abs=1e-12)  # more unique than used
    assert float(law.base.predict(N, D)) == pytest.approx(by_hand, abs=1e-12)


def test_repetition_is_worth_less_than_fresh_data_and_saturates():
    law = get_law("datablations-muennighoff2023")
    N, U = 1e9, 10e9
    fresh, repeated = law.predict(N, 40e9), law.predict(N, 40e9, U)
    assert repeated > fresh
    # D' approaches U (1 + R_D*) however often the data are repeated
    assert float(law.effective_data(1e20, U)) == pytest.approx(U * (1 + rd_star), rel=1e-9)
    epochs = law.predict(N, U * np.array([1, 2, 4, 16, 64, 256]), U)
    assert np.all(np.diff(epochs) <= 0)


def test_compute_optimal_size_for_tokens_is_the_chinchilla_allocation():
    law = get_law("chinchilla-besiroglu2024")
    C = 1e23
    G = law.G
    N = G * (C / 6) ** (law.beta / (law.alpha + law.beta))
    assert float(law.optimal_params_for_tokens(C / (6 * N))) == pytest.approx(N, rel=1e-9)


def test_published_chinchilla_laws():
    h = get_law("chinchilla-hoffmann2022")
    assert isinstance(h, ChinchillaLaw) and (h.E, h.A, h.B, h.alpha, h.beta) == (1.69, 406.4, 410.7, 0.34, 0.28)
    # Chinchilla itself (70B params, 1.4T tokens) under Hoffmann's law
    assert float(h.predict(70e9, 1.4e12)) == pytest.approx(1.69 + 406.4 / 70e9**0.34 + 410.7 / 1.4e12**0.28)
    assert float(h.predict(70e9, 1.4e12, U=1e9)) == float(h.predict(70e9, 1.4e12))  # U has no effect


def test_law_json_round_trip_keeps_samples(tmp_path):
    samples = np.array([[1.8, 500, 1500, 0.35, 0.36, 15, 5], [1.7, 450, 1400, 0.34, 0.35, 14, 6]])
    law = DataConstrainedLaw(1.8, 500.0, 1500.0, 0.35, 0.36, 15.0, 5.0, name="x", samples=samples)
    back = law_from_json(law_to_json(law))
    assert back == law and np.array_equal(back.samples, law.samples)
    path = tmp_path / "fit.json"
    import json

    path.write_text(json.dumps(law_to_json(law)))
    assert get_law(str(path)) == law


def test_unknown_law_and_bad_json_are_clear_errors(tmp_path):
    with pytest.raises(DatawallError, match="neither a published law"):
        get_law("chinchilla-2099")
    bad = tmp_path / "bad.json"
    bad.write_text('{"form": "chinchilla", "E": 1.7, "A": 400, "B": 400, "alpha": 0.3}')
    with pytest.raises(DatawallError, match="'beta' must be a finite number"):
        get_law(str(bad))
