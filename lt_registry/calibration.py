r"""Post-hoc calibrators and deployment-prior (label shift) estimators as a registry (docs/method.md §6.1).

    from lt_registry import create_calibrator, list_calibrators

    ts = create_calibrator("temperature").fit(val_logits, val_labels)       # Eq. (C1)
    probs = ts(test_logits).softmax(-1)                                       # transform = forward

    em = create_calibrator("prior_em")                                        # BCTS (C3) + EM (C5)
    em.fit(deploy_logits, val_logits=val_logits, val_labels=val_labels)
    em.test_prior                      # estimated deployment prior [C]
    adapted = em(deploy_logits)        # calibrated logits moved to the estimated prior

Entries (``list_calibrators()``): ``temperature`` (C1), ``vector`` (C2), ``bcts`` (C3), ``prior_shift`` (C4),
``prior_em`` (C5, on C3-calibrated probabilities by default) and ``prior_bbse`` (C6). Names joined with ``+``
(``"temperature+prior_shift"``) build a :class:`CalibratorChain` that applies the stages in order.

The protocol (every calibrator is an ``nn.Module``; ``forward`` is ``transform``):

* ``fit_calibration(val_logits, val_labels) -> self`` learns what is learned from *labelled validation*
  logits: the parameters of ``temperature``/``vector``/``bcts``, the calibration and the validation statistics
  of ``prior_em``/``prior_bbse``; nothing for ``prior_shift``.
* ``fit(logits, labels=None) -> self``: for ``temperature``/``vector``/``bcts`` the same as
  ``fit_calibration`` (labels required); for ``prior_shift`` nothing (it needs no fit); for the prior
  estimators ``prior_em``/``prior_bbse`` the *unlabelled deployment* logits, from which ``test_prior`` is
  estimated. They take the validation set in the same call as ``fit(deploy_logits, val_logits=...,
  val_labels=...)`` (or call ``fit_calibration`` first); passing ``labels`` to their ``fit`` is an error,
  since deployment logits are unlabelled.
* ``transform(logits) -> logits``: same shape ``[..., C]``, device and dtype as the input.

All work is vectorised torch on the logits' device (fits in float64, float32 on MPS); the only Python loops are
over optimiser / EM iterations. Fitted state is tensors (buffers) plus a small JSON-able dict (the module's extra
state: name, options, ``fitted``, iteration counts), so ``state_dict()`` / ``load_state_dict()`` round-trip; a
calibrator created with the same name accepts the state of a fitted one.
"""
from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ._registry import Registry
from .labels import check_labels
from .losses.margin import adapt_logits_to_prior
from .prior import ClassPrior

__all__ = [
    "CALIBRATORS", "register_calibrator", "create_calibrator", "list_calibrators", "is_calibrator",
    "Calibrator", "CalibratorChain", "TemperatureScaling", "VectorScaling", "BiasCorrectedTemperatureScaling",
    "PriorShift", "EMPriorEstimator", "BBSEPriorEstimator",
]

CALIBRATORS = Registry("calibrator")
register_calibrator = CALIBRATORS.register

_PRIOR_ACCEPTED = "per-class counts or probabilities (a 1-D sequence or tensor), a ClassPrior, or 'uniform'"
_TRAIN_PRIOR_HINT = ("the prior the logits encode: the training counts for a model trained with CE, focal or LDAM, "
                     "'uniform' for LA or Bayias (lt_registry.losses.assumed_test_prior tells which)")


# ---- input checks ----------------------------------------------------------------------------------------------

def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _check_logits(logits: Any, who: str, num_classes: Optional[int] = None, *, batch: bool = True,
                  what: str = "logits") -> Tensor:
    """Floating logits ``[N, C]`` (``batch=True``: a fit) or ``[..., C]`` (a transform), non-empty and finite,
    with ``C == num_classes`` when that is known."""
    if not isinstance(logits, Tensor):
        if logits is None:
            raise ValueError(f"{who}: {what} are missing; pass a floating tensor [N, C] (one row per sample).")
        try:
            logits = torch.as_tensor(logits)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"{who}: {what} must be a floating tensor [N, C], got {type(logits).__name__}.") from e
    z = logits.detach()
    if not z.is_floating_point():
        raise ValueError(f"{who}: {what} must be a floating-point tensor [N, C], got dtype {z.dtype}.")
    if (batch and z.ndim != 2) or z.ndim < 1:
        shape = "[N, C]" if batch else "[..., C]"
        raise ValueError(f"{who}: {what} must have shape {shape} (one column per class), got shape {tuple(z.shape)}.")
    if z.shape[-1] == 0:
        raise ValueError(f"{who}: {what} have no classes (C = 0); need shape [N, C] with C >= 1.")
    if z.numel() == 0:
        raise ValueError(f"{who}: {what} are empty (N = 0 samples); need at least one row.")
    if num_classes is not None and z.shape[-1] != num_classes:
        raise ValueError(f"{who}: {what} have {z.shape[-1]} classes (columns) but this calibrator has "
                         f"{num_classes} classes (from its fit or its priors); they must match.")
    if not bool(torch.isfinite(z).all()):
        raise ValueError(f"{who}: {what} contain NaN or infinite values; all entries must be finite.")
    return z


def _check_labels(labels: Any, z: Tensor, who: str, what: str = "labels") -> Tensor:
    if labels is None:
        raise ValueError(f"{who} is fitted on labelled validation logits: pass {what} (integer class indices [N]) "
                         "with the logits.")
    return check_labels(labels, int(z.shape[1]), what=f"{who}: {what}", n=int(z.shape[0])).to(z.device)


def _positive_number(value: Any, name: str, who: str, *, allow_zero: bool = False) -> float:
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
          and (value >= 0 if allow_zero else value > 0))
    if not ok:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{who}: {name} must be a {kind} finite number, got {value!r}.")
    return float(value)


def _positive_int(value: Any, name: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{who}: {name} must be a positive integer, got {value!r}.")
    return int(value)


def _prior_probs(spec: Any, name: str, who: str) -> Optional[Tensor]:
    """A prior given as counts, probabilities or a ClassPrior -> float64 probabilities [C] on the CPU;
    ``"uniform"`` -> ``None`` (uniform over the logits' classes)."""
    if isinstance(spec, str):
        if spec.strip().lower() == "uniform":
            return None
        raise ValueError(f"{who}: {name} must be {_PRIOR_ACCEPTED}; got the string {spec!r}.")
    if spec is None:
        raise ValueError(f"{who}: {name} is missing; pass {_PRIOR_ACCEPTED}.")
    if isinstance(spec, ClassPrior):
        p = spec.counts.to(torch.float64)
    else:
        try:
            p = torch.as_tensor(spec, dtype=torch.float64).detach().cpu()
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"{who}: {name} must be {_PRIOR_ACCEPTED}; got {type(spec).__name__}.") from e
    if p.ndim != 1 or p.numel() == 0:
        raise ValueError(f"{who}: {name} must be 1-D with one entry per class, got shape {tuple(p.shape)}.")
    if not bool(torch.isfinite(p).all()) or bool((p <= 0).any()):
        bad = torch.nonzero(~(torch.isfinite(p) & (p > 0))).flatten().tolist()
        raise ValueError(f"{who}: {name} entries must be positive and finite (a zero-probability class has "
                         f"log-prior -inf); bad at class indices {bad[:10]}. For counts with empty classes pass "
                         "ClassPrior(counts, smoothing=1).")
    return p / p.sum()


# ---- base class ---------------------------------------------------------------------------------------------------

class Calibrator(nn.Module):
    """Base class: ``fit_calibration`` / ``fit`` / ``transform`` (= ``forward``), state in buffers plus a JSON-able
    extra state. Subclasses set the class flags below, implement ``_fit`` and ``_transform`` (on checked inputs) and
    list their JSON-able options in ``_options()``.

    Class flags (a :class:`CalibratorChain` routes data with them):
        needs_labels: ``fit`` learns from labelled validation logits (``temperature``, ``vector``, ``bcts``).
        needs_fit: ``transform`` needs a fit first (False only for ``prior_shift``).
        estimates_prior: ``fit`` takes unlabelled deployment logits and estimates ``test_prior``; the labelled
            validation logits go to ``fit_calibration`` (``prior_em``, ``prior_bbse``).
    """

    name: str = "calibrator"
    needs_labels: bool = False
    needs_fit: bool = True
    estimates_prior: bool = False

    def __init__(self) -> None:
        super().__init__()
        self._fitted = False
        self.num_classes: Optional[int] = None

    # ---- the protocol -----------------------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        """True once ``transform`` can run."""
        return self._fitted or not self.needs_fit

    def fit(self, logits: Any, labels: Any = None) -> "Calibrator":
        """Fit on logits ``[N, C]`` (and labels ``[N]`` where the calibrator learns from them); returns self."""
        z = _check_logits(logits, self.name, self.num_classes)
        y = _check_labels(labels, z, self.name) if self.needs_labels else None
        self._fit(z, y)
        self.num_classes = int(z.shape[1])
        self._fitted = True
        return self

    def fit_calibration(self, val_logits: Any, val_labels: Any) -> "Calibrator":
        """Fit what is learned from labelled validation logits; for a calibrator that learns nothing from labels
        (``prior_shift``) this only checks the class count."""
        if self.needs_labels:
            return self.fit(val_logits, val_labels)
        _check_logits(val_logits, self.name, self.num_classes, what="val_logits")
        return self

    def transform(self, logits: Any) -> Tensor:
        """Calibrated logits ``[..., C]`` with the input's shape, device and dtype."""
        if not self.fitted:
            raise ValueError(f"{self.name} is not fitted: call {self._fit_hint()} before transform.")
        z = _check_logits(logits, self.name, self.num_classes, batch=False)
        return self._transform(z)

    def forward(self, logits: Any) -> Tensor:
        return self.transform(logits)

    # ---- subclass hooks ---------------------------------------------------------------------------------------
    def _fit(self, z: Tensor, y: Optional[Tensor]) -> None:  # pragma: no cover - overridden
        pass

    def _transform(self, z: Tensor) -> Tensor:  # pragma: no cover - overridden
        return z

    def _fit_hint(self) -> str:
        return "fit(val_logits, val_labels)" if self.needs_labels else "fit(logits)"

    def _options(self) -> Dict[str, Any]:
        return {}

    def _results(self) -> Dict[str, Any]:
        return {}

    def _set_results(self, state: Dict[str, Any]) -> None:
        pass

    def _set_options(self, options: Dict[str, Any]) -> None:
        for k, v in options.items():
            setattr(self, k, v)

    # ---- state: buffers + JSON-able extra state ---------------------------------------------------------------
    def get_extra_state(self) -> Dict[str, Any]:
        return {"name": self.name, "fitted": bool(self._fitted), "num_classes": self.num_classes,
                "options": self._options(), "results": self._results()}

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict) or "name" not in state:
            raise ValueError(f"{self.name}: the state_dict's extra state is not a calibrator's; load a state_dict "
                             "saved from a calibrator.")
        if state["name"] != self.name:
            raise ValueError(f"this state_dict is for calibrator {state['name']!r}, not {self.name!r}; load it into "
                             f"create_calibrator({state['name']!r}).")
        self._set_options(dict(state.get("options", {})))
        self._fitted = bool(state.get("fitted", False))
        n = state.get("num_classes")
        self.num_classes = None if n is None else int(n)
        self._set_results(dict(state.get("results", {})))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D401 - torch hook
        # fitted buffers change shape with C (empty before the fit): resize ours to the saved shapes first; a
        # buffer fitted under torch.inference_mode is an inference tensor, which cannot be copied into outside it
        for bname, buf in list(self._buffers.items()):
            saved = state_dict.get(prefix + bname)
            if buf is not None and isinstance(saved, Tensor) and (
                    saved.shape != buf.shape or (buf.is_inference() and not torch.is_inference_mode_enabled())):
                self._buffers[bname] = torch.empty(saved.shape, dtype=saved.dtype, device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        return f"{opts}{', ' if opts else ''}fitted={self.fitted}"


# ---- the NLL fits -------------------------------------------------------------------------------------------------

def _temperature_nll_terms(z: Tensor, y: Tensor, beta: float) -> Tuple[float, float, float]:
    """Mean NLL of softmax(beta z) and its first and second derivatives in beta (Eq. C1 with beta = 1/T):
    f = mean(-beta z_y + logsumexp(beta z)), f' = mean(E_p[z] - z_y), f'' = mean(Var_p[z]) >= 0."""
    logp = torch.log_softmax(beta * z, dim=1)
    p = logp.exp()
    ez = (p * z).sum(1)
    f = -logp.gather(1, y[:, None]).mean()
    g = (ez - z.gather(1, y[:, None]).squeeze(1)).mean()
    h = (p * (z - ez[:, None]).square()).sum(1).mean()
    f, g, h = torch.stack([f, g, h]).tolist()  # one host read per iteration
    return f, g, h


def _fit_inverse_temperature(z: Tensor, y: Tensor, t_min: float, t_max: float, tol: float,
                             max_iter: int) -> Tuple[float, int, bool]:
    """beta* = 1/T* minimising Eq. (C1) on [1/t_max, 1/t_min].

    The NLL is convex in beta (f'' is a variance), so f' is increasing and the minimiser is its root, or the bound
    where f' keeps one sign. Safeguarded Newton: Newton steps inside the bracket that f' <-> 0 defines, geometric
    bisection otherwise; stops when |f'| <= tol * (1 + |f|) or the step is below tol * beta. Returns
    (beta, iterations, converged); never returns a beta whose NLL exceeds that of beta = 1 (no scaling).
    """
    lo, hi = 1.0 / t_max, 1.0 / t_min
    beta = min(max(1.0, lo), hi)
    n_iter, converged = 0, False
    f_lo, g_lo, _ = _temperature_nll_terms(z, y, lo)
    f_hi, g_hi, _ = _temperature_nll_terms(z, y, hi)
    if g_lo > tol * (1.0 + abs(f_lo)):  # NLL increasing over the whole range: the largest allowed temperature
        beta, converged = lo, True
    elif g_hi < -tol * (1.0 + abs(f_hi)):  # decreasing over the whole range (separable): the smallest one
        beta, converged = hi, True
    else:
        for n_iter in range(1, max_iter + 1):
            f, g, h = _temperature_nll_terms(z, y, beta)
            if abs(g) <= tol * (1.0 + abs(f)):
                converged = True
                break
            if g > 0:
                hi = beta
            else:
                lo = beta
            new = beta - g / h if h > 0 else float("nan")
            if not (lo < new < hi):
                new = math.sqrt(lo * hi)
            step = abs(new - beta)
            beta = new
            if step <= tol * beta:
                converged = True
                break
    if not math.isfinite(beta):
        return 1.0, n_iter, False
    f_beta = _temperature_nll_terms(z, y, beta)[0]
    f_one = _temperature_nll_terms(z, y, 1.0)[0]
    if not (f_beta <= f_one):  # cannot happen for a convex f with 1 in range; kept as the documented fallback
        beta = 1.0
    return beta, n_iter, converged


def _fit_affine(z: Tensor, y: Tensor, *, beta0: float, per_class_scale: bool, l2: float, max_iter: int,
                tol: float) -> Tuple[Tensor, Tensor, int]:
    """LBFGS on (a, b) of ``z -> a * z + b`` minimising mean NLL + (l2 / N) * penalty (Eq. C2 / C3).

    ``per_class_scale``: a is [C] (vector scaling) and the penalty is ``||a - beta0||^2 + ||b||^2``; otherwise a is a
    scalar (BCTS, a = 1/T) and the penalty is ``||b||^2``. The objective is convex in (a, b) (the logits are linear
    in them), and it starts at the temperature solution (a = beta0, b = 0), where its value is the temperature NLL.
    """
    N, C = z.shape
    with torch.inference_mode(False), torch.enable_grad():
        z = z.clone()
        y = y.clone()
        a = torch.full((C,) if per_class_scale else (), float(beta0), dtype=z.dtype, device=z.device,
                       requires_grad=True)
        b = torch.zeros(C, dtype=z.dtype, device=z.device, requires_grad=True)
        reg = float(l2) / N
        opt = torch.optim.LBFGS([a, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol,
                                tolerance_change=tol * 1e-3, history_size=20, line_search_fn="strong_wolfe")

        def objective() -> Tensor:
            loss = torch.nn.functional.cross_entropy(z * a + b, y)
            pen = b.square().sum()
            if per_class_scale:
                pen = pen + (a - beta0).square().sum()
            return loss + reg * pen

        def closure() -> Tensor:
            opt.zero_grad()
            loss = objective()
            loss.backward()
            return loss

        opt.step(closure)
        n_iter = int(opt.state[opt._params[0]].get("n_iter", 0))
    return a.detach(), b.detach(), n_iter


def _nll(z: Tensor, y: Tensor) -> float:
    return float(torch.nn.functional.cross_entropy(z, y))


# ---- temperature, vector, BCTS --------------------------------------------------------------------------------------

@register_calibrator("temperature", aliases=("temperature_scaling", "ts"), label="Temperature scaling", order=1)
class TemperatureScaling(Calibrator):
    r"""Temperature scaling (Guo et al. 2017), docs/method.md §6.1 Eq. (C1): ``z -> z / T`` with

        T* = argmin_{T in [min_temperature, max_temperature]} (1/N) sum_i -log softmax(z_i / T)_{y_i}

    fitted on labelled validation logits by a safeguarded Newton solve in beta = 1/T (the NLL is convex in beta),
    so the fit is exact to ``tol``, deterministic, bounded, and its NLL never exceeds the unscaled one (T = 1).

    Options: ``min_temperature`` (1e-3), ``max_temperature`` (1e3), ``tol`` (1e-10, on the derivative relative to
    the NLL and on the relative step), ``max_iter`` (100). Attributes: ``temperature`` (0-d float64 tensor),
    ``n_iter``, ``converged``.
    """

    name = "temperature"
    needs_labels = True

    def __init__(self, *, min_temperature: float = 1e-3, max_temperature: float = 1e3, tol: float = 1e-10,
                 max_iter: int = 100):
        super().__init__()
        self.min_temperature = _positive_number(min_temperature, "min_temperature", self.name)
        self.max_temperature = _positive_number(max_temperature, "max_temperature", self.name)
        if self.min_temperature >= self.max_temperature:
            raise ValueError(f"{self.name}: min_temperature ({min_temperature}) must be below max_temperature "
                             f"({max_temperature}).")
        self.tol = _positive_number(tol, "tol", self.name)
        self.max_iter = _positive_int(max_iter, "max_iter", self.name)
        self.n_iter, self.converged = 0, False
        self.register_buffer("temperature", torch.tensor(1.0, dtype=torch.float64))

    def _options(self) -> Dict[str, Any]:
        return {"min_temperature": self.min_temperature, "max_temperature": self.max_temperature,
                "tol": self.tol, "max_iter": self.max_iter}

    def _results(self) -> Dict[str, Any]:
        return {"n_iter": self.n_iter, "converged": self.converged}

    def _set_results(self, state: Dict[str, Any]) -> None:
        self.n_iter, self.converged = int(state.get("n_iter", 0)), bool(state.get("converged", False))

    def _fit(self, z: Tensor, y: Optional[Tensor]) -> None:
        zw = z.to(_work_dtype(z.device))
        beta, self.n_iter, self.converged = _fit_inverse_temperature(
            zw, y, self.min_temperature, self.max_temperature, self.tol, self.max_iter)
        self.temperature = torch.tensor(1.0 / beta, dtype=zw.dtype, device=z.device)

    def _transform(self, z: Tensor) -> Tensor:
        return z / self.temperature.to(z.device, z.dtype)


class _AffineScaling(Calibrator):
    """Shared fit of vector scaling and BCTS: temperature first (C1), then LBFGS from there (C2 / C3)."""

    needs_labels = True
    per_class_scale = False

    def __init__(self, *, l2: float = 1.0, max_iter: int = 500, tol: float = 1e-9, min_temperature: float = 1e-3,
                 max_temperature: float = 1e3):
        super().__init__()
        self.l2 = _positive_number(l2, "l2", self.name, allow_zero=True)
        self.max_iter = _positive_int(max_iter, "max_iter", self.name)
        self.tol = _positive_number(tol, "tol", self.name)
        self.min_temperature = _positive_number(min_temperature, "min_temperature", self.name)
        self.max_temperature = _positive_number(max_temperature, "max_temperature", self.name)
        if self.min_temperature >= self.max_temperature:
            raise ValueError(f"{self.name}: min_temperature ({min_temperature}) must be below max_temperature "
                             f"({max_temperature}).")
        self.n_iter = 0
        self.register_buffer("temperature", torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(0, dtype=torch.float64))

    def _options(self) -> Dict[str, Any]:
        return {"l2": self.l2, "max_iter": self.max_iter, "tol": self.tol,
                "min_temperature": self.min_temperature, "max_temperature": self.max_temperature}

    def _results(self) -> Dict[str, Any]:
        return {"n_iter": self.n_iter}

    def _set_results(self, state: Dict[str, Any]) -> None:
        self.n_iter = int(state.get("n_iter", 0))

    def _fit_scales(self, z: Tensor, y: Tensor) -> Tuple[Tensor, Tensor, float]:
        zw = z.to(_work_dtype(z.device))
        beta0, _, _ = _fit_inverse_temperature(zw, y, self.min_temperature, self.max_temperature, 1e-10, 100)
        a, b, self.n_iter = _fit_affine(zw, y, beta0=beta0, per_class_scale=self.per_class_scale, l2=self.l2,
                                        max_iter=self.max_iter, tol=self.tol)
        ok = bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())
        if not ok or _nll(zw * a + b, y) > _nll(zw * beta0, y):
            # fallback (not expected: the objective is convex and starts there): the temperature solution
            a = torch.full_like(a, beta0)
            b = torch.zeros_like(b)
        return a, b, beta0


@register_calibrator("vector", aliases=("vector_scaling",), label="Vector scaling", order=2)
class VectorScaling(_AffineScaling):
    r"""Vector scaling (Guo et al. 2017), docs/method.md §6.1 Eq. (C2): ``z -> w * z + b`` with per-class weights
    (inverse temperatures) ``w`` [C] and biases ``b`` [C] minimising

        (1/N) sum_i -log softmax(w * z_i + b)_{y_i} + (l2 / N) (||w - 1/T*||^2 + ||b||^2)

    where T* is the temperature-scaling solution (C1). The L2 term shrinks toward temperature scaling (a Gaussian
    prior worth about ``l2`` pseudo-samples): it keeps classes with few or no validation samples finite, fixes the
    bias's free additive constant, and it makes the fitted NLL never exceed temperature scaling's (the objective is
    convex in (w, b) and equals that NLL at the start w = 1/T*, b = 0). LBFGS (strong Wolfe) in float64.

    Options: ``l2`` (1.0; 0 = plain vector scaling), ``max_iter`` (500), ``tol`` (1e-9, LBFGS gradient tolerance),
    ``min_temperature``/``max_temperature`` (for the C1 start). Attributes: ``weight`` [C], ``bias`` [C],
    ``temperature`` (T*), ``n_iter``.
    """

    name = "vector"
    per_class_scale = True

    def __init__(self, *, l2: float = 1.0, max_iter: int = 500, tol: float = 1e-9, min_temperature: float = 1e-3,
                 max_temperature: float = 1e3):
        super().__init__(l2=l2, max_iter=max_iter, tol=tol, min_temperature=min_temperature,
                         max_temperature=max_temperature)
        self.register_buffer("weight", torch.zeros(0, dtype=torch.float64))

    def _fit(self, z: Tensor, y: Optional[Tensor]) -> None:
        w, b, beta0 = self._fit_scales(z, y)
        self.weight, self.bias = w, b
        self.temperature = torch.tensor(1.0 / beta0, dtype=w.dtype, device=w.device)

    def _transform(self, z: Tensor) -> Tensor:
        return z * self.weight.to(z.device, z.dtype) + self.bias.to(z.device, z.dtype)


@register_calibrator("bcts", aliases=("bias_corrected_temperature_scaling", "bias_corrected_ts"), label="BCTS",
                     order=3)
class BiasCorrectedTemperatureScaling(_AffineScaling):
    r"""Bias-corrected temperature scaling (Alexandari, Kundaje & Shrikumar, ICML 2020), docs/method.md §6.1
    Eq. (C3): ``z -> z / T + b`` with one temperature and per-class biases ``b`` [C] minimising

        (1/N) sum_i -log softmax(z_i / T + b)_{y_i} + (l2 / N) ||b||^2

    (LBFGS in (1/T, b) from the temperature-scaling solution; the L2 term as in ``vector``). The biases absorb the
    validation set's class prior, so BCTS-calibrated probabilities encode the validation label frequencies: that
    is the source prior ``prior_em`` uses by default. Same options as ``vector``. Attributes: ``temperature``
    (0-d), ``bias`` [C], ``n_iter``.
    """

    name = "bcts"
    per_class_scale = False

    def __init__(self, *, l2: float = 1.0, max_iter: int = 500, tol: float = 1e-9, min_temperature: float = 1e-3,
                 max_temperature: float = 1e3):
        super().__init__(l2=l2, max_iter=max_iter, tol=tol, min_temperature=min_temperature,
                         max_temperature=max_temperature)

    def _fit(self, z: Tensor, y: Optional[Tensor]) -> None:
        a, b, _ = self._fit_scales(z, y)
        self.temperature, self.bias = 1.0 / a, b

    def _transform(self, z: Tensor) -> Tensor:
        return z / self.temperature.to(z.device, z.dtype) + self.bias.to(z.device, z.dtype)


# ---- prior shift --------------------------------------------------------------------------------------------------

def _prior_spec(spec: Any, name: str, who: str, allow_validation: bool = False) -> Tuple[str, Tensor]:
    """A prior option -> (kind, float64 probability buffer): ``"given"`` with [C]; ``"uniform"`` and (for the
    estimators) ``"validation"`` with an empty buffer (uniform over the logits' classes / filled by the fit)."""
    if allow_validation and isinstance(spec, str) and spec.strip().lower() == "validation":
        return "validation", torch.zeros(0, dtype=torch.float64)
    if spec is None:
        extra = " or 'validation'" if allow_validation else ""
        raise ValueError(f"{who} needs {name}=...: {_TRAIN_PRIOR_HINT}{extra}; accepted: {_PRIOR_ACCEPTED}.")
    p = _prior_probs(spec, name, who)
    return ("uniform", torch.zeros(0, dtype=torch.float64)) if p is None else ("given", p)


def _prior_or_none(buf: Tensor) -> Optional[Tensor]:
    return None if buf.numel() == 0 else buf


@register_calibrator("prior_shift", aliases=("posthoc_prior_shift", "prior_adjustment"), label="Prior shift",
                     order=4)
class PriorShift(Calibrator):
    r"""Post-hoc prior shift, docs/method.md §2 and §6.1 Eq. (C4): ``z -> z + log pi'_test - log pi_train``
    (the post-hoc form of Bayias / logit adjustment; computed by :func:`lt_registry.adapt_logits_to_prior`).

    Options: ``train_prior`` (required): the prior the logits encode, the training counts for a model trained with
    CE, focal or LDAM, ``"uniform"`` for LA or Bayias; ``test_prior`` (default ``"uniform"``): the deployment prior.
    Each is per-class counts or probabilities, a ClassPrior, or ``"uniform"``. ``fit`` needs no labels and does
    nothing but check the class count. Attributes: ``train_prior``, ``test_prior`` (probabilities [C]; empty =
    uniform).
    """

    name = "prior_shift"
    needs_fit = False

    def __init__(self, *, train_prior: Any = None, test_prior: Any = "uniform"):
        super().__init__()
        self._train_kind, tr = _prior_spec(train_prior, "train_prior", self.name)
        self._test_kind, te = _prior_spec(test_prior, "test_prior", self.name)
        if tr.numel() and te.numel() and tr.numel() != te.numel():
            raise ValueError(f"{self.name}: train_prior has {tr.numel()} classes but test_prior has {te.numel()}; "
                             "they must match.")
        self.register_buffer("train_prior", tr)
        self.register_buffer("test_prior", te)
        self.num_classes = int(tr.numel() or te.numel()) or None

    def _options(self) -> Dict[str, Any]:
        return {"train_prior": self._train_kind, "test_prior": self._test_kind}

    def _set_options(self, options: Dict[str, Any]) -> None:
        self._train_kind = options.get("train_prior", self._train_kind)
        self._test_kind = options.get("test_prior", self._test_kind)

    def fit(self, logits: Any = None, labels: Any = None) -> "PriorShift":
        """Nothing to fit; checks the class count of ``logits`` when given. Returns self."""
        if logits is not None:
            _check_logits(logits, self.name, self.num_classes)
        return self

    def _transform(self, z: Tensor) -> Tensor:
        return adapt_logits_to_prior(z, _prior_or_none(self.test_prior), _prior_or_none(self.train_prior))


# ---- prior estimators ---------------------------------------------------------------------------------------------

class _PriorEstimator(Calibrator):
    """Shared protocol of ``prior_em`` and ``prior_bbse``: ``fit_calibration(val_logits, val_labels)`` then
    ``fit(deploy_logits)`` (or ``fit(deploy_logits, val_logits=..., val_labels=...)``); ``transform`` moves
    (calibrated) logits from ``train_prior`` to the estimated ``test_prior`` (Eq. C4)."""

    estimates_prior = True
    uses_calibration = True

    def __init__(self, *, train_prior: Any, min_prior: float):
        super().__init__()
        self._train_kind, tr = _prior_spec(train_prior, "train_prior", self.name, allow_validation=True)
        self.min_prior = _positive_number(min_prior, "min_prior", self.name)
        if self.min_prior >= 1:
            raise ValueError(f"{self.name}: min_prior must be below 1 (a floor on estimated probabilities), "
                             f"got {min_prior!r}.")
        self.register_buffer("train_prior", tr)
        self.register_buffer("test_prior", torch.zeros(0, dtype=torch.float64))
        self.num_classes = int(tr.numel()) or None
        self._calibrated = False

    # the two-step fit -------------------------------------------------------------------------------------------
    def fit_calibration(self, val_logits: Any, val_labels: Any) -> "_PriorEstimator":
        """Fit the calibration / validation statistics on labelled validation logits; returns self."""
        z = _check_logits(val_logits, self.name, self.num_classes, what="val_logits")
        y = _check_labels(val_labels, z, self.name, what="val_labels")
        if self._train_kind == "validation":  # checked before the (costlier) calibration fit
            freq = torch.bincount(y, minlength=z.shape[1]).to(_work_dtype(z.device)) / y.numel()
            self._require_support(freq, "train_prior='validation' (the validation label frequencies)")
        self._fit_validation(z, y)
        if self._train_kind == "validation":
            self.train_prior = freq
        self.num_classes = int(z.shape[1])
        self._calibrated = True
        self._fitted = False  # a new calibration invalidates an earlier prior estimate
        return self

    def fit(self, logits: Any, labels: Any = None, *, val_logits: Any = None,
            val_labels: Any = None) -> "_PriorEstimator":
        """Estimate ``test_prior`` from unlabelled deployment ``logits`` [N, C]; with ``val_logits`` and
        ``val_labels``, first ``fit_calibration(val_logits, val_labels)``. Returns self."""
        if labels is not None:
            raise ValueError(f"{self.name}.fit takes unlabelled deployment logits; pass the labelled validation set "
                             "as fit(deploy_logits, val_logits=..., val_labels=...) or call "
                             "fit_calibration(val_logits, val_labels) first.")
        if (val_logits is None) != (val_labels is None):
            raise ValueError(f"{self.name}.fit: pass both val_logits and val_labels (the labelled validation set), "
                             "or neither.")
        if val_logits is not None:
            self.fit_calibration(val_logits, val_labels)
        z = _check_logits(logits, self.name, self.num_classes)
        if self.needs_calibration and not self._calibrated:
            raise ValueError(f"{self.name} has no calibration yet: call fit_calibration(val_logits, val_labels) "
                             "first, or fit(deploy_logits, val_logits=..., val_labels=...).")
        q = self._estimate(z)
        self.test_prior = q
        self.num_classes = int(z.shape[1])
        self._fitted = True
        return self

    @property
    def needs_calibration(self) -> bool:
        return self.uses_calibration or self._train_kind == "validation"

    def _fit_hint(self) -> str:
        return "fit(deploy_logits, val_logits=..., val_labels=...)"

    def _require_support(self, freq: Tensor, what: str) -> None:
        empty = torch.nonzero(freq <= 0).flatten().tolist()
        if empty:
            raise ValueError(f"{self.name}: the validation labels have no sample of classes "
                             f"{empty[:10]}{'...' if len(empty) > 10 else ''}, so {what} is 0 there; pass "
                             f"train_prior explicitly ({_TRAIN_PRIOR_HINT}) or a validation set covering every class.")

    def _source_prior(self, C: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        if self.train_prior.numel() == 0:
            return torch.full((C,), 1.0 / C, dtype=dtype, device=device)
        return self.train_prior.to(device, dtype)

    def _move_to_estimate(self, z: Tensor) -> Tensor:
        q = self.test_prior.clamp_min(self.min_prior)
        return adapt_logits_to_prior(z, q / q.sum(), _prior_or_none(self.train_prior))

    # hooks ----------------------------------------------------------------------------------------------------------
    def _fit_validation(self, z: Tensor, y: Tensor) -> None:  # pragma: no cover - overridden
        pass

    def _estimate(self, z: Tensor) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    # state ------------------------------------------------------------------------------------------------------
    def get_extra_state(self) -> Dict[str, Any]:
        state = super().get_extra_state()
        state["calibrated"] = bool(self._calibrated)
        return state

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        self._calibrated = bool(state.get("calibrated", False))


_INNER_CALIBRATIONS = ("bcts", "temperature", "vector", "none")


@register_calibrator("prior_em", aliases=("em", "saerens_em", "em_prior"), label="EM prior estimate", order=5)
class EMPriorEstimator(_PriorEstimator):
    r"""Deployment prior by EM (Saerens, Latinne & Decaestecker 2002) on calibrated probabilities, docs/method.md
    §6.1 Eq. (C5); by default on BCTS-calibrated probabilities (Eq. C3; Alexandari, Kundaje & Shrikumar 2020).

    With calibrated posteriors p_i(y) = p(y | x_i) under the source prior p_s, iterate from q = p_s:

        p_i(y) <- p_i(y) q(y) / p_s(y), renormalised over y;     q(y) <- (1/N) sum_i p_i(y)

    until max_y |q_new(y) - q(y)| <= ``tol`` or ``max_iter`` iterations.

    Usage::

        em = create_calibrator("prior_em")                  # or train_prior=..., calibration=..., tol=...
        em.fit(deploy_logits, val_logits=val_logits, val_labels=val_labels)
        # same as: em.fit_calibration(val_logits, val_labels).fit(deploy_logits)
        em.test_prior, em.n_iter, em.converged
        em(logits)   # calibrated logits + log test_prior - log train_prior (Eq. C4)

    Options:
        train_prior: the source prior p_s that the (calibrated) probabilities encode. ``"validation"`` (default):
            the validation label frequencies, right for BCTS/vector calibration (their biases absorb the
            validation prior) and whenever the validation set is drawn like the training set. Else counts or
            probabilities, a ClassPrior, or ``"uniform"``; with ``calibration="none"`` it is required: the
            prior the raw logits encode (training counts for CE/focal/LDAM, ``"uniform"`` for LA/Bayias).
        calibration: ``"bcts"`` (default), ``"temperature"``, ``"vector"`` or ``"none"`` (the logits are already
            calibrated), fitted by ``fit_calibration``; ``calibration_options``: a dict of its options.
        tol (1e-6), max_iter (1000): EM stopping rule. min_prior (1e-8): floor on the estimate used in
            ``transform`` (the attribute ``test_prior`` is the unfloored estimate).

    Attributes: ``test_prior`` [C], ``train_prior`` [C] (empty = uniform), ``calibrator`` (the fitted inner
    calibrator, or None), ``n_iter``, ``converged``.
    """

    name = "prior_em"

    def __init__(self, *, train_prior: Any = "validation", calibration: str = "bcts",
                 calibration_options: Optional[Dict[str, Any]] = None, tol: float = 1e-6, max_iter: int = 1000,
                 min_prior: float = 1e-8):
        super().__init__(train_prior=train_prior, min_prior=min_prior)
        self.tol = _positive_number(tol, "tol", self.name)
        self.max_iter = _positive_int(max_iter, "max_iter", self.name)
        self.n_iter, self.converged = 0, False
        self._build_inner(calibration, calibration_options)

    def _build_inner(self, calibration: Any, options: Optional[Dict[str, Any]]) -> None:
        if not isinstance(calibration, str) or calibration.strip().lower() not in _INNER_CALIBRATIONS:
            raise ValueError(f"{self.name}: calibration must be one of {', '.join(map(repr, _INNER_CALIBRATIONS))}, "
                             f"got {calibration!r}.")
        if options is not None and not isinstance(options, dict):
            raise ValueError(f"{self.name}: calibration_options must be a dict of the calibration's options, "
                             f"got {type(options).__name__}.")
        self.calibration = calibration.strip().lower()
        self.calibration_options = dict(options or {})
        self.uses_calibration = self.calibration != "none"
        if self.calibration == "none":
            if self.calibration_options:
                raise ValueError(f"{self.name}: calibration_options given but calibration='none'.")
            self.calibrator = None
        else:
            self.calibrator = create_calibrator(self.calibration, **self.calibration_options)

    def _options(self) -> Dict[str, Any]:
        return {"train_prior": self._train_kind, "calibration": self.calibration,
                "calibration_options": dict(self.calibration_options), "tol": self.tol,
                "max_iter": self.max_iter, "min_prior": self.min_prior}

    def _set_options(self, options: Dict[str, Any]) -> None:
        cal = options.get("calibration", self.calibration)
        cal_opts = options.get("calibration_options", self.calibration_options)
        if cal != self.calibration or cal_opts != self.calibration_options:
            self._build_inner(cal, cal_opts)  # before the children load: the saved inner calibrator's keys fit
        self._train_kind = options.get("train_prior", self._train_kind)
        for k in ("tol", "max_iter", "min_prior"):
            if k in options:
                setattr(self, k, options[k])

    def _results(self) -> Dict[str, Any]:
        return {"n_iter": self.n_iter, "converged": self.converged}

    def _set_results(self, state: Dict[str, Any]) -> None:
        self.n_iter, self.converged = int(state.get("n_iter", 0)), bool(state.get("converged", False))

    def _fit_validation(self, z: Tensor, y: Tensor) -> None:
        if self.calibrator is not None:
            self.calibrator.fit(z, y)

    def _calibrate(self, z: Tensor) -> Tensor:
        return z if self.calibrator is None else self.calibrator.transform(z)

    def _estimate(self, z: Tensor) -> Tensor:
        wd = _work_dtype(z.device)
        logp = torch.log_softmax(self._calibrate(z).to(wd), dim=1)  # log p(y | x_i) under p_s
        C = z.shape[1]
        ps = self._source_prior(C, z.device, wd)
        log_ps = ps.log()
        q = ps.clone()
        self.n_iter, self.converged = 0, False
        for it in range(1, self.max_iter + 1):  # Eq. (C5)
            q_new = torch.softmax(logp + (q.log() - log_ps), dim=1).mean(0)
            delta = float((q_new - q).abs().max())
            q = q_new
            self.n_iter = it
            if delta <= self.tol:
                self.converged = True
                break
        return q / q.sum()

    def _transform(self, z: Tensor) -> Tensor:
        return self._move_to_estimate(self._calibrate(z))


@register_calibrator("prior_bbse", aliases=("bbse", "black_box_shift_estimation"), label="BBSE prior estimate",
                     order=6)
class BBSEPriorEstimator(_PriorEstimator):
    r"""Deployment prior by Black Box Shift Estimation (Lipton, Wang & Smola 2018), docs/method.md §6.1 Eq. (C6).

    From the classifier's hard predictions ``yhat = argmax z``: the joint validation confusion matrix
    ``Chat[j, k] = (1/N_val) #{yhat_i = j, y_i = k}`` (``fit_calibration``) and the deployment prediction
    distribution ``muhat[j] = (1/N) #{yhat_i = j}`` (``fit``). Under label shift ``muhat = Chat w`` with importance
    weights ``w(k) = q(k) / p_val(k)``; BBSE solves it (least squares via the pseudo-inverse, exact when Chat is
    invertible), clips negative weights to 0 and renormalises ``q = w * p_val / sum(w * p_val)``, where
    ``p_val(k) = sum_j Chat[j, k]`` are the validation label frequencies (every class needs a validation sample).

    Usage as ``prior_em``: ``create_calibrator("prior_bbse", train_prior=...).fit(deploy_logits, val_logits=...,
    val_labels=...)``. ``transform`` = ``z + log q - log train_prior`` (Eq. C4; no recalibration).

    Options: ``train_prior``: the prior the logits encode, ``"validation"`` (default: the validation label
    frequencies, right when the validation set is drawn like the training set), counts/probabilities, a ClassPrior
    or ``"uniform"`` (LA/Bayias models); ``min_prior`` (1e-8): floor on the estimate used in ``transform``.
    Attributes: ``test_prior`` [C] (clipped classes are exactly 0), ``confusion`` [C, C] (joint, rows =
    predicted), ``importance_weights`` [C] (``test_prior / p_val``), ``train_prior``.
    """

    name = "prior_bbse"
    uses_calibration = True  # the confusion matrix comes from the labelled validation set

    def __init__(self, *, train_prior: Any = "validation", min_prior: float = 1e-8):
        super().__init__(train_prior=train_prior, min_prior=min_prior)
        self.register_buffer("confusion", torch.zeros(0, 0, dtype=torch.float64))
        self.register_buffer("importance_weights", torch.zeros(0, dtype=torch.float64))

    def _options(self) -> Dict[str, Any]:
        return {"train_prior": self._train_kind, "min_prior": self.min_prior}

    def _set_options(self, options: Dict[str, Any]) -> None:
        self._train_kind = options.get("train_prior", self._train_kind)
        self.min_prior = options.get("min_prior", self.min_prior)

    def _fit_validation(self, z: Tensor, y: Tensor) -> None:
        C = z.shape[1]
        pred = z.argmax(dim=1)
        joint = torch.bincount(pred * C + y, minlength=C * C).reshape(C, C).to(_work_dtype(z.device)) / y.numel()
        self._require_support(joint.sum(0), "BBSE's validation prior p_val")
        self.confusion = joint

    def _estimate(self, z: Tensor) -> Tensor:
        C = z.shape[1]
        if self.confusion.shape != (C, C):
            raise ValueError(f"{self.name}: the deployment logits have {C} classes but the validation confusion "
                             f"matrix is {tuple(self.confusion.shape)}; they must match.")
        wd = self.confusion.dtype
        mu = torch.bincount(z.argmax(dim=1), minlength=C).to(wd) / z.shape[0]
        # a C x C solve: on the CPU in float64 on every backend (tiny, deterministic, pinv works everywhere)
        joint = self.confusion.detach().cpu().to(torch.float64)
        w = torch.linalg.pinv(joint) @ mu.cpu().to(torch.float64)
        p_val = joint.sum(0)
        q = w.clamp_min(0) * p_val
        if not bool(q.sum() > 0):
            raise ValueError(f"{self.name}: every estimated importance weight is <= 0 (the deployment predictions "
                             "are inconsistent with the validation confusion matrix); use more validation or "
                             "deployment samples, or prior_em.")
        q = q / q.sum()
        self.importance_weights = (q / p_val).to(z.device, wd)
        return q.to(z.device, wd)

    def _transform(self, z: Tensor) -> Tensor:
        return self._move_to_estimate(z)


# ---- composition ----------------------------------------------------------------------------------------------------

class CalibratorChain(Calibrator):
    r"""Calibrators applied in order: ``transform(z) = s_k(...s_1(z))`` (``create_calibrator("a+b")``).

    Fitting fits each stage on the previous stage's outputs. Without a prior estimator, ``fit(logits, labels)``
    fits every stage in order, passing ``labels`` to the stages that learn from them (``temperature``,
    ``vector``, ``bcts``). With one prior estimator (``prior_em`` or ``prior_bbse``; at most one, and no stage that
    learns from labels after it, since validation logits are not drawn under the deployment prior), the chain
    follows the estimators' protocol: ``fit_calibration(val_logits, val_labels)`` fits the stages before it and
    its calibration on the validation logits, and ``fit(deploy_logits)`` (or ``fit(deploy_logits,
    val_logits=..., val_labels=...)``) passes the deployment logits through those stages and estimates the prior.

    Attributes: ``stages`` (an ``nn.ModuleList``), ``name`` (the stage names joined with ``+``), ``test_prior``
    (the estimator's, when there is one).
    """

    def __init__(self, stages: Sequence[Any]):
        super().__init__()
        if isinstance(stages, (str, Calibrator)) or not isinstance(stages, Sequence) or len(stages) == 0:
            raise ValueError("CalibratorChain needs a non-empty list of calibrators (or registry names); "
                             f"got {stages!r}.")
        built = [create_calibrator(s) if isinstance(s, str) else s for s in stages]
        for s in built:
            if not isinstance(s, Calibrator):
                raise ValueError(f"every chain stage must be a Calibrator (or a registered calibrator name), got "
                                 f"{type(s).__name__}.")
        self.stages = nn.ModuleList(built)
        self.name = "+".join(s.name for s in built)
        est = [i for i, s in enumerate(built) if s.estimates_prior]
        if len(est) > 1:
            raise ValueError(f"chain {self.name!r} has {len(est)} prior estimators; a chain can hold at most one.")
        self._est = est[0] if est else None
        if self._est is not None:
            late = [s.name for s in built[self._est + 1:] if s.needs_labels]
            if late:
                raise ValueError(f"chain {self.name!r}: {', '.join(late)} learns from labelled validation logits and "
                                 f"cannot follow the prior estimator {built[self._est].name!r} (validation logits are "
                                 "not drawn under the deployment prior); put it before the estimator.")
        self.needs_labels = any(s.needs_labels for s in built)
        self.needs_fit = any(s.needs_fit for s in built)
        self.estimates_prior = self._est is not None
        self._calibrated = False

    @property
    def fitted(self) -> bool:
        return all(s.fitted for s in self.stages)

    @property
    def test_prior(self) -> Tensor:
        if self._est is None:
            raise ValueError(f"chain {self.name!r} has no prior estimator, so no test_prior.")
        return self.stages[self._est].test_prior

    def fit_calibration(self, val_logits: Any, val_labels: Any) -> "CalibratorChain":
        """Fit the stages up to (and the calibration of) the prior estimator on labelled validation logits."""
        x = _check_logits(val_logits, self.name, what="val_logits")
        for s in self.stages:
            if s.estimates_prior:
                s.fit_calibration(x, val_labels)
                break
            if s.needs_labels:
                s.fit(x, val_labels)
            else:
                s.fit(x)
            x = s.transform(x)
        self._calibrated = True
        return self

    def fit(self, logits: Any, labels: Any = None, *, val_logits: Any = None,
            val_labels: Any = None) -> "CalibratorChain":
        """Fit the stages in order (see the class docstring for chains with a prior estimator); returns self."""
        if self._est is None:
            if val_logits is not None or val_labels is not None:
                raise ValueError(f"chain {self.name!r} has no prior estimator: pass the labelled logits as "
                                 "fit(logits, labels); val_logits/val_labels are for chains with prior_em or "
                                 "prior_bbse.")
            x = _check_logits(logits, self.name)
            for s in self.stages:
                if s.needs_labels:
                    s.fit(x, labels)
                else:
                    s.fit(x)
                x = s.transform(x)
            self._calibrated = True
            return self
        if labels is not None:
            raise ValueError(f"chain {self.name!r} ends in the prior estimator {self.stages[self._est].name!r}, whose "
                             "fit takes unlabelled deployment logits; pass the labelled validation set as "
                             "fit(deploy_logits, val_logits=..., val_labels=...) or call "
                             "fit_calibration(val_logits, val_labels) first.")
        if (val_logits is None) != (val_labels is None):
            raise ValueError(f"chain {self.name!r}: pass both val_logits and val_labels, or neither.")
        if val_logits is not None:
            self.fit_calibration(val_logits, val_labels)
        est = self.stages[self._est]
        needs_val = any(s.needs_labels for s in self.stages[:self._est]) or est.needs_calibration
        if needs_val and not self._calibrated:
            raise ValueError(f"chain {self.name!r} has no calibration yet: call fit_calibration(val_logits, "
                             "val_labels) first, or fit(deploy_logits, val_logits=..., val_labels=...).")
        x = _check_logits(logits, self.name)
        for s in self.stages[:self._est]:
            x = s.transform(x)
        est.fit(x)
        return self

    def transform(self, logits: Any) -> Tensor:
        if not self.fitted:
            raise ValueError(f"chain {self.name!r} is not fitted: call "
                             + ("fit(deploy_logits, val_logits=..., val_labels=...)" if self._est is not None
                                else "fit(val_logits, val_labels)") + " before transform.")
        x = logits
        for s in self.stages:
            x = s.transform(x)
        return x

    def get_extra_state(self) -> Dict[str, Any]:
        return {"name": self.name, "stages": [s.name for s in self.stages], "calibrated": bool(self._calibrated)}

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict) or state.get("name") != self.name:
            got = state.get("name") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"this state_dict is for calibrator {got!r}, not {self.name!r}; load it into "
                             f"create_calibrator({got!r}).")
        self._calibrated = bool(state.get("calibrated", False))

    def extra_repr(self) -> str:
        return f"fitted={self.fitted}"


# ---- facades --------------------------------------------------------------------------------------------------------

def _split_names(name: Any) -> List[str]:
    if isinstance(name, str):
        parts = [p.strip() for p in name.split("+")]
    elif isinstance(name, (list, tuple)) and all(isinstance(p, str) for p in name):
        parts = [p.strip() for p in name]
    else:
        raise ValueError(f"calibrator must be a registered name (e.g. 'temperature', or stages joined with '+' as "
                         f"'temperature+prior_shift'), a list of names, or a Calibrator; got {type(name).__name__}.")
    if not parts or any(not p for p in parts):
        raise ValueError(f"calibrator name {name!r} has an empty stage; join registered names with '+', e.g. "
                         f"'temperature+prior_em'. Available calibrators: {', '.join(list_calibrators())}.")
    return parts


def _accepted_options(factory: Any) -> List[str]:
    sig = inspect.signature(factory)
    return [p.name for p in sig.parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"]


def create_calibrator(name: Any, **kwargs: Any) -> Calibrator:
    """Build a registered calibrator, or a :class:`CalibratorChain` for names joined with ``+`` (or a list).

    Options: ``create_calibrator("prior_em", train_prior=counts, max_iter=500)``. For a chain, an option
    ``stage__option`` goes to that stage only (``prior_em__max_iter=500``; the stage by its registry name or an
    alias); a plain ``option`` goes to every stage that accepts it (``train_prior=`` reaches both ``prior_shift``
    and ``prior_em``); a stage option overrides a plain one. An option no stage accepts is a ValueError listing
    the accepted ones. A Calibrator instance is returned as it is (without options).
    """
    if isinstance(name, Calibrator):
        if kwargs:
            raise ValueError("create_calibrator got an already-built Calibrator and options; pass a registry name "
                             "to build one with options.")
        return name
    parts = _split_names(name)
    canon = [CALIBRATORS.canonical(p) for p in parts]  # an unknown name lists the available ones
    entries = [CALIBRATORS.get(c) for c in canon]
    accepted = [_accepted_options(e.factory) for e in entries]
    stage_kw: List[Dict[str, Any]] = [dict(e.defaults) for e in entries]
    plain = {k: v for k, v in kwargs.items() if "__" not in k}
    routed = {k: v for k, v in kwargs.items() if "__" in k}
    for key, value in plain.items():
        targets = [i for i, acc in enumerate(accepted) if key in acc]
        if not targets:
            opts = "; ".join(f"{c}: {', '.join(acc) or '(none)'}" for c, acc in zip(canon, accepted))
            raise ValueError(f"calibrator {'+'.join(canon)!r} has no option {key!r}. Options: {opts}.")
        for i in targets:
            stage_kw[i][key] = value
    for key, value in routed.items():
        prefix, opt = key.split("__", 1)
        stage = CALIBRATORS.canonical(prefix) if prefix in CALIBRATORS else None
        targets = [i for i, c in enumerate(canon) if c == stage]
        if not targets:
            raise ValueError(f"option {key!r}: {prefix!r} is not a stage of {'+'.join(canon)!r}; prefix an option "
                             f"with one of {', '.join(dict.fromkeys(canon))} and '__' (e.g. {canon[-1]}__tol=...).")
        for i in targets:
            if opt not in accepted[i]:
                raise ValueError(f"calibrator {canon[i]!r} has no option {opt!r} (from {key!r}); its options: "
                                 f"{', '.join(accepted[i]) or '(none)'}.")
            stage_kw[i][opt] = value
    stages = [e.factory(**kw) for e, kw in zip(entries, stage_kw)]
    return stages[0] if len(stages) == 1 else CalibratorChain(stages)


def list_calibrators(filter: str = "") -> List[str]:
    """Registered calibrator names (optionally an fnmatch pattern, ``'prior_*'``)."""
    return CALIBRATORS.list(filter)


def is_calibrator(name: Any) -> bool:
    """True when ``create_calibrator(name)`` finds every stage (``'temperature+prior_em'`` included)."""
    if not isinstance(name, str):
        return False
    parts = [p.strip() for p in name.split("+")]
    return all(p and p in CALIBRATORS for p in parts)
