"""Published laws by name, and `get_law(name_or_path)` for those or a saved fit JSON file."""

from __future__ import annotations

import math
from pathlib import Path

from datawall.errors import DatawallError
from datawall.laws.forms import ChinchillaLaw, DataConstrainedLaw, Law

# Hoffmann et al. 2022, approach 3 (eq. 10)
HOFFMANN2022 = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28, name="chinchilla-hoffmann2022")

# Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt": their final (BFGS, maximum-likelihood)
# estimates on the 240 points reconstructed from Hoffmann et al.'s figure 4
BESIROGLU2024 = ChinchillaLaw(E=1.8169, A=482.0, B=2085.4, alpha=0.3478, beta=0.3659, name="chinchilla-besiroglu2024")
# ... and their L-BFGS-B grid fit, which `laws fit` reproduces (tests compare against these)
BESIROGLU2024_LBFGS = {"E": 1.8172, "A": 477.8, "B": 2143.9, "alpha": 0.3473, "beta": 0.3672}

# Muennighoff et al. 2023, "Scaling Data-Constrained Language Models", as printed in the datablations README
# in the log-sum-exp parameterisation: A = exp(a), B = exp(b), E = exp(e)
MUENNIGHOFF2023_PRINTED = {"a": 6.255414, "b": 7.3049974, "e": 0.6254804, "alpha": 0.3526596,
                           "beta": 0.3526596, "R_D_star": 15.387756, "R_N_star": 5.309743}
_m = MUENNIGHOFF2023_PRINTED
MUENNIGHOFF2023 = DataConstrainedLaw(
    E=math.exp(_m["e"]), A=math.exp(_m["a"]), B=math.exp(_m["b"]), alpha=_m["alpha"], beta=_m["beta"],
    R_D_star=_m["R_D_star"], R_N_star=_m["R_N_star"], name="datablations-muennighoff2023",
)

PUBLISHED_LAWS: dict[str, Law] = {law.name: law for law in (HOFFMANN2022, BESIROGLU2024, MUENNIGHOFF2023)}


def get_law(name_or_path: str | Path) -> Law:
    """A published law by name, or a saved fit (the JSON that `laws fit --out` writes)."""
    key = str(name_or_path)
    if key in PUBLISHED_LAWS:
        return PUBLISHED_LAWS[key]
    path = Path(key)
    if path.is_file():
        from datawall.laws.io import load_law

        return load_law(path)
    names = ", ".join(PUBLISHED_LAWS)
    raise DatawallError(f"--law {key!r}: neither a published law ({names}) nor an existing fit JSON file")
