"""Non-learned repair of missing latent cells: zero fill, per-channel mean fill, harmonic
interpolation.

Every method has the signature of :data:`sim.complement.COMPLEMENT_METHODS` entries::

    method(latent: (C, h, w) float32, missing: (h, w) bool, rng: Generator) -> (C, h, w) float32

``missing`` is True where a cell was lost; the values of ``latent`` there are ignored.
Known cells come back exactly (bit for bit); the input is not modified.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from sim.errors import InputError

__all__ = ["zero_fill", "mean_fill", "harmonic_fill", "check_inputs"]


def check_inputs(latent: np.ndarray, missing: np.ndarray, who: str) -> tuple[np.ndarray, np.ndarray]:
    """(latent as float32 copy, missing as bool) after checking shapes; InputError otherwise."""
    latent = np.asarray(latent)
    missing = np.asarray(missing)
    if latent.ndim != 3 or missing.shape != latent.shape[1:] or missing.dtype != bool:
        raise InputError(f"{who}: expected latent (C, h, w) and a bool mask (h, w), "
                         f"got {latent.shape} {latent.dtype} and {missing.shape} {missing.dtype}")
    return latent.astype(np.float32, copy=True), missing


def zero_fill(latent: np.ndarray, missing: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Missing cells set to 0 (the latent's nominal mean)."""
    out, missing = check_inputs(latent, missing, "zero fill")
    out[:, missing] = 0.0
    return out


def mean_fill(latent: np.ndarray, missing: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Missing cells set to the per-channel mean of the received cells (0 if none arrived)."""
    out, missing = check_inputs(latent, missing, "mean fill")
    if missing.any():
        known = out[:, ~missing]
        out[:, missing] = (known.mean(axis=1, dtype=np.float64).astype(np.float32)[:, None]
                           if known.shape[1] else 0.0)
    return out


def harmonic_fill(latent: np.ndarray, missing: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Missing cells by harmonic interpolation from their neighbours (discrete Laplace equation).

    For every missing cell u_i: Σ_{j ∈ N(i)} (u_i − u_j) = 0 over its 4-neighbours inside the
    grid, known neighbours entering as boundary values (Dirichlet); the grid edge is a
    natural (Neumann) boundary. Solved per image for all channels at once with one sparse
    LU factorisation (float64). The solution is the unique one when at least one cell is
    known (every hole then touches a known cell); with no known cell the result is zeros.

    A linear ramp a·y + b·x + c is reproduced exactly in holes that do not touch the grid
    edge (at the edge the Neumann condition bends it).
    """
    out, missing = check_inputs(latent, missing, "harmonic interpolation")
    if not missing.any():
        return out
    if missing.all():
        out[:] = 0.0
        return out
    c, h, w = out.shape
    idx = np.full(h * w, -1, dtype=np.int64)
    flat_missing = missing.ravel()
    unknown = np.flatnonzero(flat_missing)
    idx[unknown] = np.arange(unknown.size)
    values = out.reshape(c, h * w).astype(np.float64)
    y, x = np.divmod(unknown, w)

    rows, cols = [], []
    degree = np.zeros(unknown.size)
    rhs = np.zeros((unknown.size, c))
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = y + dy, x + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        i = np.flatnonzero(inside)
        j = ny[i] * w + nx[i]
        degree[i] += 1
        hole = flat_missing[j]
        rows.append(i[hole])
        cols.append(idx[j[hole]])
        np.add.at(rhs, i[~hole], values[:, j[~hole]].T)
    r = np.concatenate(rows)
    k = np.concatenate(cols)
    n = unknown.size
    a = sp.csc_matrix((np.concatenate([degree, -np.ones(r.size)]),
                       (np.concatenate([np.arange(n), r]), np.concatenate([np.arange(n), k]))),
                      shape=(n, n))
    solution = splu(a).solve(rhs)
    filled = out.reshape(c, h * w)
    filled[:, unknown] = solution.T.astype(np.float32)
    return out
