# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""One cell's SLCP record (spec §13), computed in C: views.record_of.

The session reads the record of every entity's cell when it builds its result, after the
program has ended: in Python that was ~60-90 us a record (a 64-point Walsh-Hadamard transform
and ~25 passes over the histograms), 5-8 ms of every run's end. Here it is ~2-4 us.

The arithmetic is the formulas' as written in Python, in the same order: integer sums stay
integers, each division is the same correctly rounded double division, and every sum of floats
is CPython's `sum()` of floats (Neumaier's compensated summation, CPython >= 3.12), so a record
is bit for bit what the Python formulas gave (tests/kernel/test_record_of.py compares the two).
"""
from libc.math cimport fabs, isfinite, log2, pow, sqrt
from libc.stdint cimport int64_t

from . import lawcore as law

cdef double _LOG2_7 = log2(7.0)


cdef inline void _nsum_add(double* s, double* c, double x) noexcept nogil:
    """One step of CPython's sum() of floats (Neumaier)."""
    cdef double t = s[0] + x
    if fabs(s[0]) >= fabs(x):
        c[0] += (s[0] - t) + x
    else:
        c[0] += (x - t) + s[0]
    s[0] = t


cdef inline double _nsum_end(double s, double c) noexcept nogil:
    if c != 0.0 and isfinite(c):
        return s + c
    return s


cdef inline double _anisotropy(int64_t* hist, int bins, int b, int64_t n) noexcept nogil:
    """1 - 2 x the share of the counts whose index has bit b set."""
    cdef int64_t acc = 0
    cdef int i
    for i in range(bins):
        if (i >> b) & 1:
            acc += hist[i]
    return 1.0 - 2.0 * (<double>acc / <double>n)


cdef list _project(int64_t* hist, int bins, object table):
    """[sum of hist[i] x table[i][k] over i, for each k] (python's sum of floats, in order)."""
    cdef double s, c
    cdef int i, k
    out = []
    for k in range(len(table[0])):
        s = c = 0.0
        for i in range(bins):
            _nsum_add(&s, &c, <double>hist[i] * <double>table[i][k])
        out.append(_nsum_end(s, c))
    return out


def record_of(cell_id: int, row: dict, current_resonance: int) -> dict:
    """Every §13.2 field and the optional views of one cell, from its engine's `_row`."""
    cdef int64_t chi[64]
    cdef int64_t a[64]
    cdef int64_t shell_h[7]
    cdef int64_t fam_h[4]
    cdef double spec[64]
    cdef int64_t n, safe_n
    cdef int i, j, h, b, k
    cdef double s, c, p, eff, rho, eta, ent, norm, peak, support
    w = int(row["omega12"])
    lb = int(row["last_byte"])
    n = int(row["chi_valid_len"])
    safe_n = n if n > 0 else 1
    chi_list = row["chi_hist64"]
    shell_list = row["shell_hist7"]
    fam_list = row["family_hist4"]
    for i in range(64):
        chi[i] = int(chi_list[i])
        a[i] = chi[i]
    for i in range(7):
        shell_h[i] = int(shell_list[i])
    for i in range(4):
        fam_h[i] = int(fam_list[i])
    chi6 = law.CHI6[w]
    shell = law.POPCOUNT6[chi6]

    # the orthonormal Walsh-Hadamard spectrum (integer butterflies: exact), lawcore.wht64
    h = 1
    while h < 64:
        for i in range(0, 64, 2 * h):
            for j in range(i, i + h):
                x = a[j]
                y = a[j + h]
                a[j] = x + y
                a[j + h] = x - y
        h *= 2
    for i in range(64):
        spec[i] = <double>a[i] / 8.0

    eff = rho = eta = ent = support = 0.0
    if n > 0:
        s = c = 0.0
        for i in range(64):
            p = <double>chi[i] / <double>safe_n
            _nsum_add(&s, &c, pow(p, 2.0))   # python's `p ** 2` is libm's pow
        s = _nsum_end(s, c)
        eff = 64.0 / s if s > 0 else 0.0
        acc = 0
        for i in range(7):
            acc += i * shell_h[i]
        rho = <double>acc / (6.0 * <double>safe_n)
        eta = 1.0 - 2.0 * rho
        s = c = 0.0
        k = 0
        for i in range(7):
            p = <double>shell_h[i] / <double>safe_n
            if p > 0:
                _nsum_add(&s, &c, p * log2(p))
                k += 1
        ent = -_nsum_end(s, c) / _LOG2_7 if k else 0.0   # python's empty sum is the int 0: +0.0
        acc = 0
        for i in range(64):
            if chi[i] > 0:
                acc += 1
        support = <double>acc / <double>safe_n
    chi_aniso = [0.0] * 6
    gauge_aniso = [0.0] * 2
    if n > 0:
        for b in range(6):
            chi_aniso[b] = _anisotropy(chi, 64, b, safe_n)
        for b in range(2):
            gauge_aniso[b] = _anisotropy(fam_h, 4, b, safe_n)
    s = c = 0.0
    peak = 0.0
    for i in range(64):
        _nsum_add(&s, &c, spec[i] * spec[i])
        if fabs(spec[i]) > peak:
            peak = fabs(spec[i])
    norm = sqrt(_nsum_end(s, c))
    peak = peak / norm if norm > 0 else 0.0

    shell_spectral = _project(shell_h, 7, law.KRAW)
    gauge_spectral = [x / <double>n for x in _project(fam_h, 4, law.K4)] if n > 0 else [0.0] * 4

    return {
        "cell_id": int(cell_id),
        "step": int(row["step"]),
        "omega12": w,
        "state24": law.STATE24[w],
        "last_byte": lb,
        "family": law.FAMILY[lb],
        "micro_ref": law.MICRO_REF[lb],
        "q6": law.Q6[lb],
        "chi6": chi6,
        "shell": shell,
        "horizon_distance": law.HORIZON_DISTANCE[w],
        "ab_distance": law.AB_DISTANCE[w],
        "omega_sig": int(row["omega_sig"]),
        "parity_O12": int(row["parity_O12"]),
        "parity_E12": int(row["parity_E12"]),
        "parity_bit": int(row["parity_bit"]),
        "resonance_key": int(row["resonance_key"]),
        "current_resonance": int(current_resonance),
        "spectral64": [spec[i] for i in range(64)],
        "shell_spectral": shell_spectral,
        "gauge_spectral": gauge_spectral,
        "chi_hist64": [chi[i] for i in range(64)],
        "shell_hist7": [shell_h[i] for i in range(7)],
        "family_hist4": [fam_h[i] for i in range(4)],
        "effective_support": eff,
        "occupation": rho,
        "spectral_damping": eta,
        "chi_anisotropy": chi_aniso,
        "gauge_anisotropy": gauge_aniso,
        "optical_coordinates": [shell / 6.0, (6.0 - shell) / 6.0, (2.0 * shell - 6.0) / 6.0],
        "stabilizer_type": law.stabilizer(chi6),
        "valid_len": n,
        "has_closed_word": bool(row["has_closed_word"]),
        "word4": [int(x) for x in row["word4"]],
        "u6": (w >> 6) & 0x3F,
        "v6": w & 0x3F,
        "chi_support_ratio": support,
        "shell_entropy": ent,
        "spectral_peak_ratio": peak,
    }
