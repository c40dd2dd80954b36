"""Bring your own ODE: vector field + initial state + observation operator -> forward model.

An ordinary differential equation

    d state / dt = f(t, state, params),     state(t0) = state0(params),

observed at times ``t_1 <= ... <= t_n`` through an observation operator

    prediction = observe(state(t_1..t_n), params)

is turned into a forward model ``params -> prediction`` (what :class:`jaxinv.Model`
needs) by :class:`ODE`, solved with Diffrax (Kidger 2021, "On Neural Differential
Equations", PhD thesis, Oxford, ch. 5-6).  ``state`` may be any PyTree of arrays;
``params`` is the Model's dict of named, constrained parameters (physical units).

Choices (all selectable, defaults in brackets):

* ``solver``: a Diffrax solver or its name -- explicit ``"tsit5"`` [default],
  ``"dopri5"``, ``"dopri8"``, ``"heun"``, ``"euler"``; implicit (stiff)
  ``"kvaerno3"``, ``"kvaerno4"``, ``"kvaerno5"``, ``"implicit_euler"``.  Stiff
  systems (fast and slow time scales: reactions near equilibrium, diffusion on a
  fine grid) need an implicit solver: an explicit one takes ~(stiffness ratio) steps
  and runs out of ``max_steps``.
* ``rtol``/``atol``: the PID step-size controller's tolerances [1e-8 / 1e-10 in
  float64; 1e-5 / 1e-7 in float32], or a fixed step ``dt0`` with ``adaptive=False``.
* ``adjoint``: how gradients are taken -- ``"checkpoint"`` [default]
  (``RecursiveCheckpointAdjoint``: reverse mode through the solver, exact gradient of
  the discretised solution, memory O(log steps)), ``"backsolve"``
  (``BacksolveAdjoint``: continuous adjoint ODE solved backwards, memory O(1), gradient
  accurate to the tolerances only -- and *wrong* for dissipative systems such as diffusion,
  whose state cannot be re-integrated backwards in time: on the reaction–diffusion problem
  it is off by 95 % and 30x slower, ``benchmarks/ode.py``), ``"forward"`` (``ForwardMode``: forward-mode
  sensitivities; cheapest when parameters are few and outputs many, and required for
  ``jax.jacfwd``), ``"direct"`` (``DirectAdjoint``).  Or any Diffrax adjoint object.

Failures.  The solve never raises inside a traced computation (``throw=False``): a
solve that fails (step size driven to zero, ``max_steps`` exhausted, non-finite state)
returns a prediction filled with NaN, so the energy is NaN, which every jaxinv engine
reads as zero probability (MAP rejects the step, NUTS/HMC flag a divergence and reject,
SMC and replica exchange read NaN as ``log p = -inf``).  ``ODE.solve`` gives the raw
Diffrax solution with its ``result`` code for diagnosis.  Where the likelihood cannot
score a prediction (log of a negative concentration), the posterior sends no cotangent
back into the solve, so the gradient of an implicit solver's step does not raise either.
One case is left: when the Newton iteration inside an implicit step (Kvaerno*) turns NaN,
the gradient's linear solve (Optimistix's implicit JVP) raises an ``EquinoxRuntimeError``;
set ``EQX_ON_ERROR=nan`` in the environment to turn it into NaN (docs/drug-elimination.md).

Everything is a pure function of ``params``: works under ``jit``, ``vmap`` (one
dataset or parameter set per lane) and ``grad``.  Keep the functions you pass
(``vector_field``, ``initial_state``, ``observe``) defined once at module level: they are
static under ``eqx.filter_jit``, so a new lambda per call recompiles.
"""

from __future__ import annotations

from typing import Any, Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = ["ODE", "SOLVERS", "ADJOINTS", "solver_from_name", "adjoint_from_name"]

SOLVERS: dict[str, Callable[[], diffrax.AbstractSolver]] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "heun": diffrax.Heun,
    "euler": diffrax.Euler,
    "kvaerno3": diffrax.Kvaerno3,
    "kvaerno4": diffrax.Kvaerno4,
    "kvaerno5": diffrax.Kvaerno5,
    "implicit_euler": diffrax.ImplicitEuler,
}

ADJOINTS: dict[str, Callable[[], diffrax.AbstractAdjoint]] = {
    "checkpoint": diffrax.RecursiveCheckpointAdjoint,
    "backsolve": diffrax.BacksolveAdjoint,
    "forward": diffrax.ForwardMode,
    "direct": diffrax.DirectAdjoint,
}


def solver_from_name(solver) -> diffrax.AbstractSolver:
    """A Diffrax solver from its name in :data:`SOLVERS` (or the solver itself)."""
    if isinstance(solver, diffrax.AbstractSolver):
        return solver
    if isinstance(solver, str) and solver.lower() in SOLVERS:
        return SOLVERS[solver.lower()]()
    raise ValueError(f"unknown ODE solver {solver!r}; give a diffrax solver or one of {sorted(SOLVERS)}")


def adjoint_from_name(adjoint) -> diffrax.AbstractAdjoint:
    """A Diffrax adjoint from its name in :data:`ADJOINTS` (or the adjoint itself)."""
    if isinstance(adjoint, diffrax.AbstractAdjoint):
        return adjoint
    if isinstance(adjoint, str) and adjoint.lower() in ADJOINTS:
        return ADJOINTS[adjoint.lower()]()
    raise ValueError(f"unknown adjoint {adjoint!r}; give a diffrax adjoint or one of {sorted(ADJOINTS)}")


def _identity(states, params):
    return states


def _traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _times(times) -> jax.Array:
    times = jnp.asarray(times, dtype=jnp.result_type(float))
    if times.ndim != 1 or times.size == 0:
        raise ValueError(f"observation times must be a non-empty 1-D array, got shape {times.shape}")
    if _traced(times):  # times as an input being differentiated (design, sensitivity): no value checks
        return times
    if not bool(jnp.all(jnp.isfinite(times))):
        raise ValueError("observation times must be finite")
    if times.size > 1 and not bool(jnp.all(jnp.diff(times) >= 0)):
        raise ValueError("observation times must be non-decreasing")
    return times


class ODE(eqx.Module):
    """Forward model ``params -> observe(state(times), params)`` of an ODE (module docstring).

    Args:
        vector_field: ``f(t, state, params) -> d state/dt`` (same PyTree structure as
            ``state``; units of state per unit of t).
        initial_state: ``params -> state(t0)``, or a fixed PyTree of arrays.
        times: observation times (1-D, non-decreasing, >= ``t0``; units of t).
        observe: ``(states, params) -> prediction``, where ``states`` is the state
            PyTree with a leading time axis of length ``len(times)``.  Default: the
            states themselves (then the state must be a single array).
        t0: start of the integration [default: ``times[0]``].
        solver: a Diffrax solver or its name (module docstring).
        adjoint: a Diffrax adjoint or its name (module docstring).
        rtol: relative tolerance of the step-size controller (default by precision).
        atol: absolute tolerance of the step-size controller (default by precision).
        dt0: initial (or, with ``adaptive=False``, fixed) step; ``None`` lets the
            controller choose.
        adaptive: ``False`` for a constant step ``dt0``.
        max_steps: step budget; a solve that needs more fails (NaN prediction).
    """

    vector_field: Callable
    initial_state: Any
    times: jax.Array
    observe: Callable
    t0: jax.Array
    solver: diffrax.AbstractSolver
    stepsize_controller: diffrax.AbstractStepSizeController
    adjoint: diffrax.AbstractAdjoint
    dt0: float | None = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)

    def __init__(
        self,
        vector_field: Callable,
        initial_state,
        times,
        observe: Callable | None = None,
        *,
        t0=None,
        solver="tsit5",
        adjoint="checkpoint",
        rtol: float | None = None,
        atol: float | None = None,
        dt0: float | None = None,
        adaptive: bool = True,
        max_steps: int = 16384,
    ):
        if not callable(vector_field):
            raise TypeError("vector_field must be callable: (t, state, params) -> d state/dt")
        self.vector_field = vector_field
        self.initial_state = initial_state
        self.times = _times(times)
        self.observe = _identity if observe is None else observe
        t0 = self.times[0] if t0 is None else jnp.asarray(t0, dtype=self.times.dtype)
        if not (_traced(t0) or _traced(self.times)) and not bool(t0 <= self.times[0]):
            raise ValueError(f"t0 = {float(t0)} is after the first observation time {float(self.times[0])}")
        self.t0 = t0
        self.solver = solver_from_name(solver)
        self.adjoint = adjoint_from_name(adjoint)
        double = self.times.dtype == jnp.float64  # dtype is static, also for traced times
        if adaptive:
            rtol = (1e-8 if double else 1e-5) if rtol is None else float(rtol)
            atol = (1e-10 if double else 1e-7) if atol is None else float(atol)
            if not (rtol > 0 and atol > 0):
                raise ValueError(f"rtol and atol must be positive, got {rtol}, {atol}")
            self.stepsize_controller = diffrax.PIDController(rtol=rtol, atol=atol)
        else:
            if dt0 is None or not dt0 > 0:
                raise ValueError("adaptive=False needs a positive fixed step dt0")
            self.stepsize_controller = diffrax.ConstantStepSize()
        self.dt0 = None if dt0 is None else float(dt0)
        if int(max_steps) < 1:
            raise ValueError("max_steps must be >= 1")
        self.max_steps = int(max_steps)

    def state0(self, params):
        """The initial state (a PyTree of float arrays)."""
        y0 = self.initial_state(params) if callable(self.initial_state) else self.initial_state
        return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=self.times.dtype), y0)

    def solve(self, params) -> diffrax.Solution:
        """The Diffrax solution at the observation times (``sol.ys``, ``sol.result``, ``sol.stats``)."""
        t1 = self.times[-1]
        dt0 = self.dt0
        if dt0 is None and isinstance(self.stepsize_controller, diffrax.ConstantStepSize):
            raise ValueError("a constant step size needs dt0")
        return diffrax.diffeqsolve(
            diffrax.ODETerm(self.vector_field),
            self.solver,
            t0=self.t0,
            t1=t1,
            dt0=dt0,
            y0=self.state0(params),
            args=params,
            saveat=diffrax.SaveAt(ts=self.times),
            stepsize_controller=self.stepsize_controller,
            adjoint=self.adjoint,
            max_steps=self.max_steps,
            throw=False,
        )

    def states(self, params):
        """The state at every observation time (leading time axis), NaN where the solve failed."""
        sol = self.solve(params)
        ok = sol.result == diffrax.RESULTS.successful
        return jax.tree_util.tree_map(lambda a: jnp.where(ok, a, jnp.nan), sol.ys)

    def __call__(self, params):
        """The prediction ``observe(state(times), params)``; all NaN if the solve failed."""
        sol = self.solve(params)
        ok = sol.result == diffrax.RESULTS.successful
        prediction = self.observe(sol.ys, params)
        return jax.tree_util.tree_map(lambda a: jnp.where(ok, a, jnp.nan), prediction)
