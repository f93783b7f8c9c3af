"""Comparing the edited image with an imagined drawing, through the quality defect the judge measured.

Why a module of its own: every decision of the explanation search (:mod:`.explanation`) is a comparison of
this kind, and how noise, blur and blocks are modelled is one idea.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .calibration import NOISE_VISIBLE
from .editors import degrade
from .quality import QualityReport

_ERF = np.frompyfunc(math.erf, 1, 1)


def _phi(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _Phi(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _ERF(z / math.sqrt(2.0)).astype(np.float64))


def _clipped_noise_tables(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ``clip(x + N(0, sigma^2), 0, 255)`` for every grey level ``x``.

    Noise on a dark or bright colour is clipped, which moves its average away from the colour (black +
    noise averages lighter than black). Comparing the edited pixels with these means, not with the clean
    colours, keeps that bias from favouring a wrong explanation (e.g. "not darkened" on a black picture).
    """
    s = max(float(sigma), 1e-6)
    x = np.arange(256, dtype=np.float64)
    a, b = (0.0 - x) / s, (255.0 - x) / s
    pa, pb, fa, fb = _Phi(a), _Phi(b), _phi(a), _phi(b)
    inside = pb - pa
    m = 255.0 * (1.0 - pb) + x * inside + s * (fa - fb)
    m2 = (255.0 ** 2 * (1.0 - pb) + x * x * inside + 2.0 * x * s * (fa - fb)
          + s * s * (inside + a * fa - b * fb))
    return m.astype(np.float32), np.maximum(m2 - m * m, 0.0).astype(np.float32)


@dataclass(frozen=True)
class View:
    """A clean drawing as the edited image would show it: expected colours ``m`` (H, W, 3) and the
    expected squared error of a correct explanation per pixel ``v`` (H, W), or 0 without noise."""

    m: np.ndarray
    v: np.ndarray | float


class Comparator:
    """Colour errors between the edited image and clean drawings seen through its measured defect.

    Blur and blockiness are deterministic, so a correct drawing passed through them matches the edited
    pixels exactly; noise is not, but it averages out in the sums over regions that every decision uses.
    Errors are truncated at a cap well above the noise: a pixel that neither of two explanations gets
    right says nothing about which one is better (otherwise an unrelated damaged object could make the
    wrong explanation win by being "less wrong" there).
    """

    def __init__(self, edited: np.ndarray, quality: QualityReport) -> None:
        self.e = edited.astype(np.float32)
        # Blur is modelled only where it is a finding (even under faint grain, or where the pixel count took
        # the ramps for noise): the planted defocus is far stronger than a faintly soft edge, which a clean
        # drawing explains better.
        blurred = quality.finding == "blur" and quality.score <= 3 and quality.noise_sigma < NOISE_VISIBLE / 2
        self.kind = "blur" if blurred else "blocky" if quality.kind == "blocky" else None
        self.noisy = quality.kind == "noise" and not blurred
        self._dummy = np.random.default_rng(0)
        self.set_sigma(float(quality.noise_sigma) if self.noisy else 0.0)

    def set_sigma(self, sigma: float) -> None:
        self.sigma = float(sigma)
        self.noise_var = 3.0 * self.sigma ** 2  # expected squared error of a correct explanation, per pixel
        self.cap = 3.0 * self.noise_var + 8000.0
        if self.noisy:
            self._mean, self._var = _clipped_noise_tables(self.sigma)

    def view(self, clean: np.ndarray) -> View:
        """A clean drawing as the edited image's defect would show it."""
        if self.noisy:
            return View(self._mean[clean], self._var[clean].sum(-1))
        if self.kind is None:
            return View(clean.astype(np.float32), 0.0)
        return View(degrade(clean, self.kind, self._dummy).astype(np.float32), 0.0)

    def err(self, view: View) -> np.ndarray:
        d = self.e - view.m
        return np.minimum((d * d).sum(-1), self.cap)

    def excess(self, err: np.ndarray, view: View, mask: np.ndarray) -> float:
        """Mean error over ``mask`` beyond what noise alone would leave (about 0 where ``view`` is right)."""
        if not mask.any():
            return 0.0
        v = view.v[mask].mean() if isinstance(view.v, np.ndarray) else view.v
        return float(err[mask].mean() - v)

    def expected(self, view: View, mask: np.ndarray | None = None) -> float:
        """The summed error noise alone would leave over ``mask`` (the whole image by default)."""
        if not isinstance(view.v, np.ndarray):
            return 0.0
        return float(view.v.sum() if mask is None else view.v[mask].sum())

    def unexplained_tolerance(self, n_pixels: int) -> float:
        """How far a correct explanation's summed error may exceed the expected noise (4 standard
        deviations of a sum of ``n_pixels`` chi-square(3) terms; a little slack without noise)."""
        return 4.0 * np.sqrt(n_pixels) * 0.8165 * self.noise_var + 1000.0

    def median_shift(self, clean: np.ndarray, mask: np.ndarray, background: np.ndarray | None = None) -> float:
        """How far the colour the edited pixels show over ``mask`` is from the clean drawing's, in the channel
        that moved most (grey levels): the smaller of two robust readings, so that only a change a viewer
        sees counts. The median colour's shift, less what noise alone could move a median of that many
        pixels (3 standard errors), shrugs off grain (clipping at black or white leaves a median in place).
        The shift of the best-matching quarter of the pixels shrugs off a soft rim, which can cover most of a
        small object or all of an outline; with ``background`` given, a pixel mixed of the drawn colour and
        the background counts as that colour (a soft rim is such a mix, another colour is not)."""
        n = int(mask.sum())
        if n == 0:
            return 0.0
        e, c = self.e[mask], clean[mask].astype(np.float32)
        median = np.abs(np.median(e, axis=0) - np.median(c, axis=0)).max() - 3.0 * 1.2533 * self.sigma / np.sqrt(n)
        if background is not None:  # the nearest point of the segment from the background to the drawn colour
            b = np.asarray(background, dtype=np.float32)
            span = c - b
            t = np.clip(((e - b) * span).sum(-1) / np.maximum((span * span).sum(-1), 1.0), 0.0, 1.0)
            c = b + t[:, None] * span
        closest = np.percentile(np.abs(e - c).max(-1), 25)
        return float(min(median, closest))

    def calibrate(self, best_clean: np.ndarray) -> None:
        """Measure the noise again, where it is not clipped.

        The neighbour-difference estimate of :func:`assess_quality` is biased low where noise is clipped at
        black or white. Here only neighbouring pixels that the best explanation so far draws in the same
        colour, well inside 0-255, are used: there the difference of the edited pixels is plain noise (even
        where the explanation is wrong, as long as the edited image is flat there too).
        """
        if not self.noisy:
            return
        x = best_clean.astype(np.float32)
        s = max(self.sigma, 1.0)
        for _ in range(2):
            diffs = []
            for xa, xb, ea, eb in ((x[:, 1:], x[:, :-1], self.e[:, 1:], self.e[:, :-1]),
                                   (x[1:], x[:-1], self.e[1:], self.e[:-1])):
                ok = (xa == xb) & (xa > 2.0 * s) & (xa < 255.0 - 2.0 * s)
                diffs.append((ea - eb)[ok])
            d = np.abs(np.concatenate(diffs))
            if d.size < 100:
                break
            s = 1.4826 * float(np.median(d)) / np.sqrt(2.0)
        self.set_sigma(max(s, 1.0))


def preference(cmp: Comparator, intact: View, alt: View,
               err_intact: np.ndarray | None = None) -> tuple[float, float, bool]:
    """How much better ``alt`` explains the edited pixels than ``intact``, where the two differ.

    Returns (s, gain, fits): s is +1 when the edited image is exactly ``alt`` there and -1 when it is
    exactly ``intact`` (noise moves it by about 2 sigma / |difference|); gain is the reduction of the error;
    fits says ``alt`` itself explains those pixels (its error is small next to the difference it makes),
    so that "less wrong" is never taken for "right".
    """
    d = ((intact.m - alt.m) ** 2).sum(-1)
    m = d > 0.5
    if not m.any():
        return 0.0, 0.0, False
    energy = float(np.minimum(d[m], cmp.cap).sum())
    e_alt = float(cmp.err(alt)[m].sum())
    gain = float((cmp.err(intact) if err_intact is None else err_intact)[m].sum()) - e_alt
    fits = e_alt - cmp.expected(alt, m) <= 0.35 * energy
    return gain / energy, gain, fits
