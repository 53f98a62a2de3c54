"""Cox fits of one to a few covariates, for the hundreds a calibration makes per evaluation.

Each calibration (overall and per subgroup, per model and horizon) fits two small Cox models: the
smoother of observed risk on a spline of predicted risk, and the calibration slope. A site's
evaluation makes about 250 of them. lifelines' ``CoxPHFitter`` spends three quarters of each such
fit on what is never read here (summary statistics, standard errors, pandas bookkeeping), which
made stratified calibration three quarters of a site's evaluation time. This fits the same model
the same way (Newton-Raphson on Efron's partial likelihood, covariates standardised, lifelines'
ridge penalty, Breslow's baseline hazard) and predicts survival as lifelines does; the tests pin
both to ``CoxPHFitter`` on the same rows. Every model a report or a policy names (TRTR, TSTR,
hazard ratios) is still fitted by lifelines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class SmallCoxError(ArithmeticError):
    """The fit did not converge (the message says why)."""


@dataclass(frozen=True)
class SmallCox:
    """A fitted Cox model: coefficients and Breslow's cumulative baseline hazard at each observed time."""

    params: np.ndarray
    centre: np.ndarray  # the training rows' covariate means: hazards are exp((x - centre) . params)
    times: np.ndarray  # the distinct observed durations, increasing
    cumulative_baseline: np.ndarray  # at ``times``, for the hazard exp((x - centre) . params)

    def partial_hazard(self, x: np.ndarray) -> np.ndarray:
        return np.exp((np.asarray(x, float).reshape(len(x), -1) - self.centre) @ self.params)

    def survival_at(self, x: np.ndarray, horizon: float) -> np.ndarray:
        """S(horizon | x) per row; the baseline interpolated linearly between observed times, as lifelines does."""
        baseline = float(np.interp(horizon, self.times, self.cumulative_baseline))
        return np.exp(-baseline * self.partial_hazard(x))


def _efron(x: np.ndarray, durations: np.ndarray, events: np.ndarray, beta: np.ndarray):  # noqa: ANN202
    """Log partial likelihood (Efron's ties), its gradient and Hessian; rows sorted by duration."""
    risk = np.exp(x @ beta)
    xr = x * risk[:, None]
    xxr = x[:, :, None] * xr[:, None, :]
    # Sums over the risk set {duration >= t} at each distinct time: reverse cumulative sums taken
    # at each time's first row.
    starts = np.flatnonzero(np.r_[True, durations[1:] != durations[:-1]])
    at_risk = [np.cumsum(a[::-1], axis=0)[::-1][starts] for a in (risk, xr, xxr)]
    dead = events.astype(bool)
    tied = [np.add.reduceat(np.where(dead.reshape((-1,) + (1,) * (a.ndim - 1)), a, 0.0), starts, axis=0)
            for a in (risk, xr, xxr, x)]  # fmt: skip
    deaths = np.add.reduceat(dead.astype(int), starts)
    # One term per death: at a time with d deaths, Efron's l-th term removes l/d of the tied deaths' sums.
    k = np.repeat(np.arange(len(starts)), deaths)
    fraction = (np.arange(len(k)) - np.repeat(np.cumsum(deaths) - deaths, deaths)) / np.repeat(deaths, deaths)
    phi = at_risk[0][k] - fraction * tied[0][k]
    mean = (at_risk[1][k] - fraction[:, None] * tied[1][k]) / phi[:, None]
    second = (at_risk[2][k] - fraction[:, None, None] * tied[2][k]) / phi[:, None, None]
    dead_x = tied[3].sum(axis=0)
    loglik = float(dead_x @ beta - np.log(phi).sum())
    gradient = dead_x - mean.sum(axis=0)
    hessian = mean.T @ mean - second.sum(axis=0)
    return loglik, gradient, hessian


def fit_small_cox(
    x: np.ndarray, durations: np.ndarray, events: np.ndarray, penalizer: float = 0.0, max_steps: int = 100
) -> SmallCox:
    """Fit S(t | x) = exp(-H0(t) exp(x . beta)) as ``CoxPHFitter(penalizer=penalizer)`` would."""
    x = np.asarray(x, float).reshape(len(durations), -1)
    durations, events = np.asarray(durations, float), np.asarray(events, float)
    if not (np.isfinite(x).all() and np.isfinite(durations).all() and np.isfinite(events).all()):
        raise SmallCoxError("a covariate, duration or event is missing or infinite")
    order = np.argsort(durations, kind="stable")
    x, durations, events = x[order], durations[order], events[order]
    mean, scale = x.mean(axis=0), x.std(axis=0, ddof=1)
    scale = np.where(scale > 0, scale, 1.0)
    z = (x - mean) / scale
    ridge = len(z) * penalizer  # lifelines' penalty: n * penalizer * |beta|^2 / 2, standardised
    beta = np.zeros(z.shape[1])
    loglik, gradient, hessian = _efron(z, durations, events, beta)
    loglik -= 0.5 * ridge * beta @ beta
    for _ in range(max_steps):
        gradient = gradient - ridge * beta
        hessian = hessian - ridge * np.eye(len(beta))
        try:
            delta = np.linalg.solve(-hessian, gradient)
        except np.linalg.LinAlgError as exc:
            reason = "a covariate is constant or separates the events"
            raise SmallCoxError(f"the Hessian is singular ({exc}): {reason}") from exc
        step = 1.0
        while True:  # halve the step until the penalised likelihood does not fall
            candidate = beta + step * delta
            new = _efron(z, durations, events, candidate)
            new_loglik = new[0] - 0.5 * ridge * candidate @ candidate
            if np.isfinite(new_loglik) and new_loglik >= loglik - 1e-12 * abs(loglik) or step < 1e-8:
                break
            step /= 2
        beta, (_, gradient, hessian), loglik = candidate, new, new_loglik
        # Converged when Newton's step is negligible. Where a covariate separates the events the
        # likelihood has no maximum: the steps stay about as long as the gap between the groups
        # while the likelihood's gains shrink, so a rule on those gains would stop anywhere
        # (lifelines warns and returns where its steps stopped); here that fit is refused.
        if np.linalg.norm(step * delta) < 1e-7:
            break
    else:
        raise SmallCoxError(f"no convergence in {max_steps} Newton steps: a covariate separates the events")
    if not np.isfinite(beta).all():
        raise SmallCoxError("the fit diverged")
    # Past a hazard ratio of e^30 between two rows the likelihood's slope is below float
    # precision: a separated fit that looks converged.
    if np.ptp(z @ beta) > 30:
        raise SmallCoxError("hazard ratios beyond e^30 between rows: a covariate separates the events")
    params = beta / scale
    # Breslow: at each distinct time, its deaths over the risk set's summed hazard (centred, as
    # lifelines does, so that the hazards neither overflow nor underflow).
    risk = np.exp((x - mean) @ params)
    times, first = np.unique(durations, return_index=True)
    at_risk = np.cumsum(risk[::-1])[::-1][first]
    deaths = np.add.reduceat(events, first)
    cumulative = np.cumsum(deaths / at_risk)
    if not np.isfinite(cumulative).all():
        raise SmallCoxError("the baseline hazard is not finite")
    return SmallCox(params, mean, times, cumulative)
