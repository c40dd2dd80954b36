"""Reader and model formulas for the NIST StRD nonlinear-regression datasets
(public domain; copies of NIST's files in ``tests/data/nist_strd``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

DATA = Path(__file__).parent / "data" / "nist_strd"


def _gauss(b, x):
    return (b[0] * jnp.exp(-b[1] * x) + b[2] * jnp.exp(-((x - b[3]) ** 2) / b[4] ** 2)
            + b[5] * jnp.exp(-((x - b[6]) ** 2) / b[7] ** 2))


def _lanczos(b, x):
    return b[0] * jnp.exp(-b[1] * x) + b[2] * jnp.exp(-b[3] * x) + b[4] * jnp.exp(-b[5] * x)


# The formulas exactly as printed in each file's "Model:" block.
FORMULAS = {
    "Misra1a": lambda b, x: b[0] * (1 - jnp.exp(-b[1] * x)),
    "BoxBOD": lambda b, x: b[0] * (1 - jnp.exp(-b[1] * x)),
    "DanWood": lambda b, x: b[0] * x ** b[1],
    "Chwirut2": lambda b, x: jnp.exp(-b[0] * x) / (b[1] + b[2] * x),
    "Eckerle4": lambda b, x: (b[0] / b[1]) * jnp.exp(-0.5 * ((x - b[2]) / b[1]) ** 2),
    "MGH10": lambda b, x: b[0] * jnp.exp(b[1] / (x + b[2])),
    "Bennett5": lambda b, x: b[0] * (b[1] + x) ** (-1 / b[2]),
    "MGH09": lambda b, x: b[0] * (x**2 + x * b[1]) / (x**2 + x * b[2] + b[3]),
    "Rat43": lambda b, x: b[0] / ((1 + jnp.exp(b[1] - b[2] * x)) ** (1 / b[3])),
    "Lanczos1": _lanczos,
    "Lanczos2": _lanczos,
    "Lanczos3": _lanczos,
    "Thurber": lambda b, x: (b[0] + b[1] * x + b[2] * x**2 + b[3] * x**3)
    / (1 + b[4] * x + b[5] * x**2 + b[6] * x**3),
    "Gauss1": _gauss,
    "Gauss2": _gauss,
    "Gauss3": _gauss,
}


class Curve(eqx.Module):
    """A NIST model as a forward module: the formula (static) over the predictor ``x`` (an
    array leaf, so that datasets with the same formula and length share one compiled MAP)."""

    formula: Callable = eqx.field(static=True)
    names: tuple[str, ...] = eqx.field(static=True)
    x: jax.Array

    def __call__(self, params):
        return self.formula([params[b] for b in self.names], self.x)


@dataclass(frozen=True)
class NistProblem:
    name: str
    x: np.ndarray
    y: np.ndarray
    starts: tuple[np.ndarray, np.ndarray]
    certified: np.ndarray
    certified_sd: np.ndarray
    certified_rss: float

    def formula(self, b, x):
        return FORMULAS[self.name](b, x)


def load(name: str) -> NistProblem:
    lines = (DATA / f"{name}.dat").read_text().splitlines()
    rows = []
    for line in lines[40:60]:
        m = re.match(r"\s*b\d+\s*=\s*(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", line)
        if m:
            rows.append([float(v) for v in m.groups()])
    rows = np.array(rows)
    rss = next(float(l.split(":")[1]) for l in lines if l.startswith("Residual Sum of Squares"))
    data = np.array([[float(v) for v in l.split()] for l in lines[60:] if l.strip()])
    return NistProblem(
        name=name,
        y=data[:, 0],  # NIST columns are "y x"
        x=data[:, 1],
        starts=(rows[:, 0], rows[:, 1]),
        certified=rows[:, 2],
        certified_sd=rows[:, 3],
        certified_rss=rss,
    )
