"""Coherence math for LatticeOS (seed 003, Phase 1 and 2), made precise.

The phi-resolvent of a wavenumber k is ``R(k) = 1 / (1 + phi k^2)`` with phi = 1.618034 and k the
*angular* frequency in radians per sample (k in [-pi, pi]): R(0) = 1, R(pi) = 0.059.

coherence_score(data) -- a numeric array's resolvent-weighted share of spectral energy:
    X = fftn(x, norm="ortho") over all axes, k^2 = sum over axes of k_axis^2,
    coherence = sum R(k) |X|^2 / sum |X|^2   (in [R(k_max), 1]; 1.0 for an all-zero array).
  A constant array scores 1.0; white noise scores about atan(pi sqrt(phi)) / (pi sqrt(phi)) = 0.33
  in 1-D (the seed's 0.3 cut-off sits just below it); a slow sine scores close to 1.
  Non-numeric data has no score (None).

entity_coherence(spectral64) -- a kernel entity's coherence from its SLCP record's spectral64
  (WHT64 of the cell's chirality histogram): the same weighting over the Walsh sequency index s
  (number of sign changes of the Walsh function, 0..63), mapped to k = pi s / 63:
    coherence = sum R(k_s) S_s^2 / sum S_s^2.
  spectral64 is assumed in natural (Hadamard) order, as cyext emits it; pass order="sequency"
  for an already sequency-ordered vector.

PhiResolventRegularizer -- seed 003 Phase 1 in numpy (and torch when torch is importable; it is
never required). penalty(x) = lambda * mean(|X - R X|^2) = lambda * mean((1 - R)^2 |X|^2).
Bugs of the seed's sketch fixed here:
  1. ``fftfreq(n, d=1.0/device=...)`` is a syntax error; the sample spacing is d=1 and the device
     is a separate keyword (taken from x).
  2. fft2 transforms the last TWO axes but k^2 was built for the last axis only (and broadcast
     with unsqueeze(0).unsqueeze(0)): k^2 is now ky^2[:, None] + kx^2[None, :] over both axes.
  3. fftfreq gives cycles/sample (|k| <= 0.5), so R >= 0.71 and the filter barely damps; we use
     angular frequency 2 pi fftfreq (|k| <= pi).
  4. The unnormalised FFT makes the penalty grow with the array size; norm="ortho" keeps it
     equal to a share of the signal's energy (Parseval), comparable across shapes.
  5. The scheduler sketch's coherence (mean of R |X|^2) is not bounded to 0..1 and scales with
     the amplitude; ours is a ratio of energies (amplitude-free, 0..1).
  6. The usage example calls the regularizer on ``gradients`` before ``backward()``: apply it to
     activations (or parameters) that are part of the graph.
  7. ``x.dim() > 2`` picks fft2 for 3-D+ input only; kept, but 2-D input (batch, features) is
     transformed along the last axis with a matching k^2 (same rule in numpy and torch).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

PHI = 1.618034
_K_MAX = math.pi


def phi_resolvent(k: Any, phi: float = PHI) -> Any:
    """1 / (1 + phi k^2), elementwise (k in radians per sample)."""
    k = np.asarray(k, dtype=np.float64)
    return 1.0 / (1.0 + phi * k * k)


def _k2_grid(shape: tuple[int, ...]) -> np.ndarray:
    k2 = np.zeros(shape, dtype=np.float64)
    for axis, n in enumerate(shape):
        k = 2.0 * math.pi * np.fft.fftfreq(n)
        view = [1] * len(shape)
        view[axis] = n
        k2 = k2 + (k * k).reshape(view)
    return k2


def coherence_score(data: Any, phi: float = PHI) -> float | None:
    """Resolvent-weighted share of spectral energy of a numeric array, in 0..1 (see module doc).

    Returns None for data that is not numeric (strings, objects, empty arrays)."""
    try:
        x = np.asarray(data)
    except Exception:  # noqa: BLE001 - arbitrary user data
        return None
    if x.size == 0 or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        return None
    x = x.astype(np.complex128 if np.iscomplexobj(x) else np.float64)
    if x.ndim == 0:
        return 1.0
    if not np.all(np.isfinite(x)):
        return None
    power = np.abs(np.fft.fftn(x, norm="ortho")) ** 2
    total = float(power.sum())
    if total <= 0.0:
        return 1.0
    weights = 1.0 / (1.0 + phi * _k2_grid(x.shape))
    return float(min(1.0, max(0.0, float((weights * power).sum()) / total)))


def _walsh_sequency64() -> np.ndarray:
    h = np.array([[1.0]])
    while h.shape[0] < 64:
        h = np.block([[h, h], [h, -h]])
    return (np.diff(np.sign(h), axis=1) != 0).sum(axis=1)


_SEQUENCY64 = _walsh_sequency64()


def entity_coherence(spectral64: Any, phi: float = PHI, order: str = "natural") -> float | None:
    """Coherence of a kernel cell from its SLCP spectral64 (see module doc); None if empty/invalid."""
    try:
        s = np.asarray(spectral64, dtype=np.float64).reshape(-1)
    except Exception:  # noqa: BLE001
        return None
    if s.size != 64 or not np.all(np.isfinite(s)):
        return None
    seq = _SEQUENCY64 if order == "natural" else np.arange(64)
    power = s * s
    total = float(power.sum())
    if total <= 0.0:
        return None
    w = phi_resolvent(_K_MAX * seq / 63.0, phi)
    return float(min(1.0, max(0.0, float((w * power).sum()) / total)))


def slcp_coherence(slcp: dict[str, Any], phi: float = PHI) -> float | None:
    """entity_coherence of an SLCP record dict (None when it has no spectral64)."""
    spec = (slcp or {}).get("spectral64")
    return None if spec is None else entity_coherence(spec, phi)


class PhiResolventRegularizer:
    """The seed's phi-resolvent regularizer, fixed (see module doc). Call it on a numpy array or a
    torch tensor; with torch the result is a differentiable scalar tensor."""

    def __init__(self, phi: float = PHI, lambda_reg: float = 1e-4) -> None:
        self.phi = float(phi)
        self.lambda_reg = float(lambda_reg)

    def _axes(self, ndim: int) -> tuple[int, ...]:
        return (-2, -1) if ndim > 2 else (-1,)

    def __call__(self, x: Any) -> Any:
        if type(x).__module__.startswith("torch"):
            return self._torch(x)
        a = np.asarray(x, dtype=np.float64)
        if a.ndim == 0:
            return 0.0
        axes = self._axes(a.ndim)
        xf = np.fft.fftn(a, axes=axes, norm="ortho")
        k2 = _k2_grid(tuple(a.shape[ax] for ax in axes))
        r = 1.0 / (1.0 + self.phi * k2)
        return self.lambda_reg * float(np.mean(np.abs(xf - xf * r) ** 2))

    forward = __call__

    def _torch(self, x: Any) -> Any:
        import torch  # lazy: torch is optional

        if x.dim() == 0:
            return x.new_zeros(())
        axes = self._axes(x.dim())
        xf = torch.fft.fftn(x, dim=axes, norm="ortho")
        k2 = torch.zeros([x.shape[a] for a in axes], dtype=torch.float64, device=x.device)
        for i, a in enumerate(axes):
            k = 2.0 * math.pi * torch.fft.fftfreq(x.shape[a], d=1.0, device=x.device, dtype=torch.float64)
            view = [1] * len(axes)
            view[i] = x.shape[a]
            k2 = k2 + (k * k).reshape(view)
        r = (1.0 / (1.0 + self.phi * k2)).to(xf.real.dtype)
        return self.lambda_reg * torch.mean(torch.abs(xf - xf * r) ** 2)
