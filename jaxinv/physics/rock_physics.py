"""Rock physics of fluid-bearing rocks: elastic moduli, seismic velocities and electrical
conductivity of a solid host with fluid-filled pores.

All functions are pure ``jax.numpy`` (differentiable, ``jax.vmap``-able, broadcasting).
Units: moduli in GPa, densities in g/cm^3, so that velocities come out in km/s
(1 GPa / (1 g/cm^3) = 1 km^2/s^2); conductivities in S/m.

Elastic moduli: Kuster & Toksöz (1974, Geophysics 39(5), 587-606, in the
form given by Mavko, Mukerji & Dvorkin, *The Rock Physics Handbook*, section 4.7) for a
host (K_m, G_m) with a volume fraction phi of identical, randomly oriented spheroidal
inclusions (K_i, G_i) of aspect ratio alpha (oblate: 0 < alpha <= 1; alpha = 1 sphere,
alpha -> 0 penny-shaped crack)::

    (K_KT - K_m) (K_m + 4/3 G_m) / (K_KT + 4/3 G_m) = phi (K_i - K_m) P
    (G_KT - G_m) (G_m + zeta_m)  / (G_KT + zeta_m)  = phi (G_i - G_m) Q
    zeta(K, G) = G/6 (9K + 8G)/(K + 2G)

solved in closed form (x = phi (K_i - K_m) P / (K_m + 4/3 G_m), y = phi (G_i - G_m) Q /
(G_m + zeta_m))::

    K_KT = (K_m + 4/3 G_m x) / (1 - x),     G_KT = (G_m + zeta_m y) / (1 - y).

P and Q are Berryman's (1980, "Long-wavelength propagation in composite elastic media II.
Ellipsoidal inclusions", J. Acoust. Soc. Am. 68(6), 1820-1831) scalar factors of a spheroid,
:func:`spheroid_pq`, as tabulated by Mavko et al. (section 4.7; the same expressions are in
open implementations such as stoneforge's ``rock_physics/inclusion.py``).  Page ranges and
handbook section numbers here are from memory, not re-checked.

Validity.  Kuster-Toksöz is a *dilute* (non-interacting, non-self-consistent) scheme: the
inclusions do not see each other.  It is valid for small porosity and, for thin pores, for
phi / alpha << 1 (crack density small; Mavko et al. section 4.7).  For spheres KT coincides
with the Hashin-Shtrikman bound at any phi (tested), but for thin pores at phi / alpha >~ 1
the shear modulus it gives can become negative.  :func:`kuster_toksoz` returns the
formula's value unchanged; callers that explore such regions (a prior over phi and alpha)
must guard it (see :func:`seismic_velocities`' ``floor``).

Velocities: ``rho = (1 - phi) rho_m + phi rho_f``, ``Vp = sqrt((K + 4/3 G)/rho)``,
``Vs = sqrt(G/rho)``.

Electrical conductivity: the Hashin-Shtrikman (1962, J. Appl. Phys. 33, 3125) bounds of a
two-phase isotropic mixture; the upper bound (conducting fluid interconnected,
sigma_f > sigma_s) is the model Roberts & Tyburczy (1999, JGR 104(B4), 7055-7065) found to
describe partially molten olivine-basalt, as did Archie's law; :func:`archie` gives the
(modified) Archie (1942, Trans. AIME 146, 54-62) law ``sigma = C sigma_f phi^m``.
"""

from __future__ import annotations

from fractions import Fraction
from math import factorial

import jax
import jax.numpy as jnp

__all__ = [
    "archie",
    "hashin_shtrikman_conductivity",
    "hashin_shtrikman_moduli",
    "hashin_shtrikman_upper",
    "kuster_toksoz",
    "mix_density",
    "penny_crack_pq",
    "seismic_velocities",
    "sphere_pq",
    "spheroid_pq",
    "spheroid_theta_f",
    "velocities",
    "zeta",
]


def zeta(k, g):
    """``zeta(K, G) = G/6 (9K + 8G)/(K + 2G)`` (Mavko et al. section 4.7)."""
    return g / 6.0 * (9.0 * k + 8.0 * g) / (k + 2.0 * g)


# -- Berryman's theta(alpha), f(alpha) --------------------------------------------------------
# For oblate spheroids, with e = 1 - alpha^2 and s = sqrt(e),
#   theta = alpha / e^(3/2) [arccos(alpha) - alpha sqrt(e)] = alpha g(e),
#   g(e)  = (arcsin s - s sqrt(1 - s^2)) / s^3,
#   f     = alpha^2 (3 theta - 2) / e.
# Both have removable singularities at alpha = 1 (sphere: theta = 2/3, f = -2/5).  Near it
# (e < _E_SERIES) they are evaluated from their Taylor series in e, built here with exact
# rational arithmetic from the series of arcsin and sqrt.
_N_SERIES = 12
_E_SERIES = 0.05  # series truncation ~ e^_N_SERIES ~ 2e-16; the closed form's cancellation error ~1e-12 of f there


def _half_binom(n: int) -> Fraction:
    """binom(1/2, n) (exact)."""
    out = Fraction(1)
    for j in range(n):
        out *= (Fraction(1, 2) - j) / (j + 1)
    return out


def _series_coefficients():
    # arcsin s = sum_n (2n)! / (4^n (n!)^2 (2n+1)) s^(2n+1);  s sqrt(1-s^2) = sum_n binom(1/2,n)(-1)^n s^(2n+1)
    n_terms = _N_SERIES + 2
    g = [Fraction(factorial(2 * n), 4**n * factorial(n) ** 2 * (2 * n + 1)) - _half_binom(n) * (-1) ** n
         for n in range(1, n_terms + 1)]  # g(e) = sum_k g[k] e^k (the n = 0 terms cancel)
    sq = [_half_binom(n) * (-1) ** n for n in range(n_terms + 1)]  # sqrt(1 - e)
    h = [sum(sq[j] * g[k - j] for j in range(k + 1)) for k in range(n_terms)]  # theta = h(e)
    assert h[0] == Fraction(2, 3)
    r = [3 * h[k + 1] for k in range(n_terms - 1)]  # (3 theta - 2)/e
    f = [r[k] - (r[k - 1] if k else 0) for k in range(n_terms - 1)]  # (1 - e) (3 theta - 2)/e
    return [float(c) for c in h[:_N_SERIES]], [float(c) for c in f[:_N_SERIES]]


def _poly(coefficients, e):
    out = jnp.zeros_like(e)
    for c in reversed(coefficients):
        out = out * e + c
    return out


_THETA_SERIES, _F_SERIES = _series_coefficients()


def spheroid_theta_f(alpha):
    """Berryman's (1980) ``theta`` and ``f`` of an oblate spheroid of aspect ratio
    ``0 < alpha <= 1``::

        theta = alpha / (1 - alpha^2)^(3/2) [arccos(alpha) - alpha sqrt(1 - alpha^2)]
        f     = alpha^2 (3 theta - 2) / (1 - alpha^2)

    exact at ``alpha = 1`` (2/3, -2/5) and with finite gradients there (a Taylor series in
    ``1 - alpha^2`` near the sphere)."""
    alpha = jnp.asarray(alpha, dtype=jnp.result_type(float))
    e = 1.0 - alpha * alpha
    near = e < _E_SERIES
    # a safe branch: no 0/0 in the unused closed form (nor in its gradient); alpha itself, not
    # sqrt(1 - e), enters the closed form (1 - e loses all digits of a thin spheroid's alpha^2)
    a_far = jnp.where(near, 0.5, alpha)
    e_far = 1.0 - a_far * a_far
    s = jnp.sqrt(e_far)
    theta_far = a_far / (e_far * s) * (jnp.arccos(a_far) - a_far * s)
    f_far = (1.0 - e_far) * (3.0 * theta_far - 2.0) / e_far
    e_near = jnp.where(near, e, 0.0)
    theta = jnp.where(near, _poly(_THETA_SERIES, e_near), theta_far)
    f = jnp.where(near, _poly(_F_SERIES, e_near), f_far)
    return theta, f


def spheroid_pq(k_m, g_m, k_i, g_i, alpha):
    """Berryman's (1980) P and Q of randomly oriented oblate spheroids (aspect ratio
    ``0 < alpha <= 1``) of an inclusion (K_i, G_i) in a host (K_m, G_m)::

        A = G_i/G_m - 1,  B = (K_i/K_m - G_i/G_m)/3,  R = 3 G_m / (3 K_m + 4 G_m)
        F1 = 1 + A [3/2 (f + theta) - R (3/2 f + 5/2 theta - 4/3)]
        F2 = 1 + A [1 + 3/2 (f + theta) - R/2 (3 f + 5 theta)] + B (3 - 4R)
             + A/2 (A + 3B)(3 - 4R) [f + theta - R (f - theta + 2 theta^2)]
        F3 = 1 + A [1 - (f + 3/2 theta) + R (f + theta)]
        F4 = 1 + A/4 [f + 3 theta - R (f - theta)]
        F5 = A [-f + R (f + theta - 4/3)] + B theta (3 - 4R)
        F6 = 1 + A [1 + f - R (f + theta)] + B (1 - theta)(3 - 4R)
        F7 = 2 + A/4 [3 f + 9 theta - R (3 f + 5 theta)] + B theta (3 - 4R)
        F8 = A [1 - 2R + f/2 (R - 1) + theta/2 (5R - 3)] + B (1 - theta)(3 - 4R)
        F9 = A [(R - 1) f - R theta] + B theta (3 - 4R)
        P = F1 / F2,   Q = 1/5 [2/F3 + 1/F4 + (F4 F5 + F6 F7 - F8 F9)/(F2 F4)]

    with ``theta, f`` from :func:`spheroid_theta_f` (Berryman 1980 II; Mavko et al. section 4.7).  A fluid has ``G_i = 0``, a dry pore ``K_i = G_i = 0``."""
    theta, f = spheroid_theta_f(alpha)
    a = g_i / g_m - 1.0
    b = (k_i / k_m - g_i / g_m) / 3.0
    r = 3.0 * g_m / (3.0 * k_m + 4.0 * g_m)
    c = 3.0 - 4.0 * r
    f1 = 1.0 + a * (1.5 * (f + theta) - r * (1.5 * f + 2.5 * theta - 4.0 / 3.0))
    f2 = (1.0 + a * (1.0 + 1.5 * (f + theta) - 0.5 * r * (3.0 * f + 5.0 * theta)) + b * c
          + 0.5 * a * (a + 3.0 * b) * c * (f + theta - r * (f - theta + 2.0 * theta**2)))
    f3 = 1.0 + a * (1.0 - (f + 1.5 * theta) + r * (f + theta))
    f4 = 1.0 + 0.25 * a * (f + 3.0 * theta - r * (f - theta))
    f5 = a * (-f + r * (f + theta - 4.0 / 3.0)) + b * theta * c
    f6 = 1.0 + a * (1.0 + f - r * (f + theta)) + b * (1.0 - theta) * c
    f7 = 2.0 + 0.25 * a * (3.0 * f + 9.0 * theta - r * (3.0 * f + 5.0 * theta)) + b * theta * c
    f8 = a * (1.0 - 2.0 * r + 0.5 * f * (r - 1.0) + 0.5 * theta * (5.0 * r - 3.0)) + b * (1.0 - theta) * c
    f9 = a * ((r - 1.0) * f - r * theta) + b * theta * c
    p = f1 / f2
    q = (2.0 / f3 + 1.0 / f4 + (f4 * f5 + f6 * f7 - f8 * f9) / (f2 * f4)) / 5.0
    return p, q


def sphere_pq(k_m, g_m, k_i, g_i):
    """P and Q of spheres (Berryman 1980; Mavko et al. section 4.7): ``P = (K_m + 4/3 G_m)/(K_i + 4/3 G_m)``,
    ``Q = (G_m + zeta_m)/(G_i + zeta_m)``."""
    z = zeta(k_m, g_m)
    return (k_m + 4.0 / 3.0 * g_m) / (k_i + 4.0 / 3.0 * g_m), (g_m + z) / (g_i + z)


def penny_crack_pq(k_m, g_m, k_i, g_i, alpha):
    """P and Q of penny-shaped cracks, the thin-spheroid limit (alpha << 1; Berryman 1980,
    as tabulated in Mavko et al. section 4.7)::

        beta_m = G_m (3 K_m + G_m) / (3 K_m + 4 G_m)
        P = (K_m + 4/3 G_i) / (K_i + 4/3 G_i + pi alpha beta_m)
        Q = 1/5 [1 + 8 G_m / (4 G_i + pi alpha (G_m + 2 beta_m))
                 + 2 (K_i + 2/3 (G_i + G_m)) / (K_i + 4/3 G_i + pi alpha beta_m)]
    """
    beta = g_m * (3.0 * k_m + g_m) / (3.0 * k_m + 4.0 * g_m)
    denom = k_i + 4.0 / 3.0 * g_i + jnp.pi * alpha * beta
    p = (k_m + 4.0 / 3.0 * g_i) / denom
    q = (1.0 + 8.0 * g_m / (4.0 * g_i + jnp.pi * alpha * (g_m + 2.0 * beta))
         + 2.0 * (k_i + 2.0 / 3.0 * (g_i + g_m)) / denom) / 5.0
    return p, q


def kuster_toksoz(k_m, g_m, k_i, g_i, phi, alpha):
    """Effective bulk and shear moduli ``(K, G)`` [units of the inputs] of a host with a
    volume fraction ``phi`` of spheroidal inclusions of aspect ratio ``alpha`` (Kuster &
    Toksöz 1974 with Berryman's 1980 P, Q; see the module docstring for the equations and
    the validity: dilute, phi/alpha << 1 for thin pores)."""
    p, q = spheroid_pq(k_m, g_m, k_i, g_i, alpha)
    z = zeta(k_m, g_m)
    x = phi * (k_i - k_m) * p / (k_m + 4.0 / 3.0 * g_m)
    y = phi * (g_i - g_m) * q / (g_m + z)
    return (k_m + 4.0 / 3.0 * g_m * x) / (1.0 - x), (g_m + z * y) / (1.0 - y)


def hashin_shtrikman_moduli(k1, g1, k2, g2, f1):
    """Hashin-Shtrikman bounds of two isotropic phases, the bound being the upper one when
    phase 1 is the stiffer (Mavko et al. section 4.1)::

        K = K1 + f2 / [(K2 - K1)^-1 + f1 (K1 + 4/3 G1)^-1]
        G = G1 + f2 / [(G2 - G1)^-1 + 2 f1 (K1 + 2 G1) / (5 G1 (K1 + 4/3 G1))]
    """
    f2 = 1.0 - f1
    k = k1 + f2 / (1.0 / (k2 - k1) + f1 / (k1 + 4.0 / 3.0 * g1))
    g = g1 + f2 / (1.0 / (g2 - g1) + 2.0 * f1 * (k1 + 2.0 * g1) / (5.0 * g1 * (k1 + 4.0 / 3.0 * g1)))
    return k, g


def mix_density(rho_m, rho_f, phi):
    """``rho = (1 - phi) rho_m + phi rho_f`` (volume-weighted)."""
    return (1.0 - phi) * rho_m + phi * rho_f


def velocities(k, g, rho):
    """``(Vp, Vs) = (sqrt((K + 4/3 G)/rho), sqrt(G/rho))``; km/s for GPa and g/cm^3."""
    return jnp.sqrt((k + 4.0 / 3.0 * g) / rho), jnp.sqrt(g / rho)


def _soft_floor(x, floor):
    # floor + floor softplus((x - floor)/floor): = x for x >> floor (difference ~floor exp(-x/floor),
    # below 1e-200 of x at x = 0.5 x_m), -> floor for x -> -inf; smooth and positive everywhere
    return floor + floor * jax.nn.softplus((x - floor) / floor)


def seismic_velocities(k_m, g_m, rho_m, k_f, rho_f, phi, alpha, g_f=0.0, floor=None):
    """``(Vp, Vs)`` [km/s] of a host (K_m, G_m [GPa], rho_m [g/cm^3]) with a volume fraction
    ``phi`` of fluid-filled (K_f, G_f = 0, rho_f) spheroidal pores of aspect ratio ``alpha``:
    :func:`kuster_toksoz` moduli and :func:`mix_density`.

    ``floor`` (optional, a fraction such as 1e-3): the effective moduli M pass through a smooth
    floor ``m + m softplus((M - m)/m)``, ``m = floor * M_m``, before the square roots, so that where
    Kuster-Toksöz is used outside its validity (phi/alpha >~ 1) and gives a negative modulus
    the velocities stay finite and differentiable (and near ``sqrt(floor)`` of the host's,
    which data reject); it leaves moduli above ~0.05 M_m unchanged to machine precision and
    tends to ``floor * M_m`` (never below) as M -> -inf.
    """
    k, g = kuster_toksoz(k_m, g_m, k_f, g_f, phi, alpha)
    if floor is not None:
        k = _soft_floor(k, floor * k_m)
        g = _soft_floor(g, floor * g_m)
    return velocities(k, g, mix_density(rho_m, rho_f, phi))


def hashin_shtrikman_conductivity(sigma_s, sigma_f, phi):
    """Hashin-Shtrikman (1962) bounds on the conductivity of a solid (sigma_s) with a volume
    fraction phi of fluid (sigma_f) [S/m]: ``(lower, upper)`` for sigma_f > sigma_s::

        upper = sigma_f + (1 - phi) / [1/(sigma_s - sigma_f) + phi/(3 sigma_f)]
        lower = sigma_s + phi / [1/(sigma_f - sigma_s) + (1 - phi)/(3 sigma_s)]

    The upper bound is the fluid-connected geometry (fluid wets the grain boundaries); the
    lower bound isolated fluid pockets in a resistive matrix.  (For sigma_f < sigma_s the two
    are swapped.)"""
    upper = sigma_f + (1.0 - phi) / (1.0 / (sigma_s - sigma_f) + phi / (3.0 * sigma_f))
    lower = sigma_s + phi / (1.0 / (sigma_f - sigma_s) + (1.0 - phi) / (3.0 * sigma_s))
    return lower, upper


def hashin_shtrikman_upper(sigma_s, sigma_f, phi):
    """The Hashin-Shtrikman upper bound (:func:`hashin_shtrikman_conductivity`) [S/m]."""
    return hashin_shtrikman_conductivity(sigma_s, sigma_f, phi)[1]


def archie(sigma_f, phi, m=1.0, c=1.0, sigma_s=0.0):
    """(Modified) Archie's law ``sigma = sigma_s + c sigma_f phi^m`` [S/m] (Archie 1942 with
    c = 1 and m the cementation exponent, ~2 for sandstones; Roberts & Tyburczy 1999 fit
    c = 0.73, m = 0.98 for olivine-basalt partial melt).  ``sigma_s = 0`` (default) is the
    classical law; a solid conductivity in parallel is a common modification."""
    return sigma_s + c * sigma_f * phi**m
