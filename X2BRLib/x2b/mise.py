"""Multiresolution isosurface extraction (MISE), as in Occupancy Networks.

:class:`MISE` is a pure-numpy query/update loop over a lattice of points; it
knows nothing about torch or the network. It evaluates a coarse lattice, then
repeatedly halves the step inside the cells the surface passes through (cells
whose corners straddle the threshold, dilated by ``dilate`` cells so thin
structures poking out of a cell are not missed); every value never evaluated
is trilinearly interpolated from the coarser level (Mescheder et al. 2019).

:func:`extract_labels` drives MISE with the any-bone probability
(1 - p(background)) of a decode function on the reconstruction box of a
:class:`~X2BRLib.geometry.ProjectionGeometry` and returns a multi-class label
volume on exactly ``geometry.box_grid(voxel_mm_final)`` (the same voxel
centres as the dataset's ``gt_labels`` when the voxel sizes agree): the final
lattice point i is the voxel centre i of that grid, the coarse lattices are
every 2^k-th voxel centre.

Start resolution: ribs are 8-12 mm tall and 5-8 mm thick; a lattice step of
4 mm guarantees every rib cross-section contains a lattice point along each
axis, 8 mm does not. Default: start 4 mm, one step to 2 mm (or two to 1 mm).
"""
from __future__ import annotations

import math
import time

import numpy as np
from scipy import ndimage


def _upsample2(c: np.ndarray) -> np.ndarray:
    """Trilinear x2 upsampling of a lattice: shape m -> 2m - 1 per axis (corner-aligned)."""
    for ax in range(3):
        m = c.shape[ax]
        shape = list(c.shape)
        shape[ax] = 2 * m - 1
        out = np.empty(shape, c.dtype)
        sl = [slice(None)] * 3
        sl[ax] = slice(0, None, 2)
        out[tuple(sl)] = c
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[ax], b[ax] = slice(0, -1), slice(1, None)
        sl[ax] = slice(1, None, 2)
        out[tuple(sl)] = 0.5 * (c[tuple(a)] + c[tuple(b)])
        c = out
    return c


class MISE:
    """MISE on a lattice of ``resolution0 * 2**upsampling_steps + 1`` points per axis.

    resolution0: int or 3 ints, number of cells of the coarsest lattice per axis.
    threshold: occupied where value > threshold.
    dilate: cells around each surface cell refined too (0 = Occupancy Networks).
    Optional labels (multi-class): ``update(points, values, labels)`` with small
    integer labels; then cells whose occupied corners carry different labels
    (two bones touching) are refined as well, and :meth:`to_dense_labels` gives
    every lattice point the label of the nearest evaluated point of the finest
    level that has one (nearest-neighbour upsampling, coarse to fine).
    Loop::

        pts = m.query()              # (M, 3) int64 indices on the final lattice
        while len(pts):
            m.update(pts, f(pts))    # values (M,)
            pts = m.query()
        dense = m.to_dense()         # (Lx, Ly, Lz) float32
    """

    def __init__(self, resolution0, upsampling_steps: int, threshold: float, dilate: int = 1):
        r0 = np.broadcast_to(np.asarray(resolution0, int), (3,))
        if (r0 < 1).any() or upsampling_steps < 0:
            raise ValueError("resolution0 must be >= 1 and upsampling_steps >= 0")
        self.step = 2 ** int(upsampling_steps)
        self.shape = tuple(int(r) * self.step + 1 for r in r0)
        self.threshold = float(threshold)
        self.dilate = int(dilate)
        self.step0 = self.step
        self.values = np.zeros(self.shape, np.float32)
        self.known = np.zeros(self.shape, bool)  # evaluated (not interpolated)
        self.labels = None  # (Lx, Ly, Lz) uint8 once update() got labels
        self._pending = np.ones(tuple(int(r) + 1 for r in r0), bool)  # level 0: all points
        self.level_queries = [0]

    # lattice of the current step: strided view of the final one
    def _view(self, arr, step=None):
        s = self.step if step is None else step
        return arr[::s, ::s, ::s]

    def query(self) -> np.ndarray:
        """Next points to evaluate, (M, 3) int64 indices on the final lattice; empty when done."""
        while True:
            todo = self._pending & ~self._view(self.known)
            if todo.any():
                return np.argwhere(todo) * self.step
            if self.step == 1:
                return np.zeros((0, 3), np.int64)
            self._subdivide()

    def update(self, points, values, labels=None) -> None:
        """Store values (M,) (and optional labels (M,) in 0..255) at lattice indices points (M, 3)."""
        p = np.asarray(points, np.int64).reshape(-1, 3)
        v = np.nan_to_num(np.asarray(values, np.float32).reshape(-1), nan=0.0)
        self.values[p[:, 0], p[:, 1], p[:, 2]] = v
        if labels is not None:
            if self.labels is None:
                self.labels = np.zeros(self.shape, np.uint8)
            self.labels[p[:, 0], p[:, 1], p[:, 2]] = np.asarray(labels).reshape(-1)
        self.known[p[:, 0], p[:, 1], p[:, 2]] = True
        self.level_queries[-1] += len(p)

    def _fill(self, step: int) -> None:
        """Interpolate the not-evaluated points of the lattice of ``step`` from that of ``2 * step``."""
        fine = self._view(self.values, step)
        unknown = ~self._view(self.known, step)
        if unknown.any():
            up = _upsample2(self._view(self.values, 2 * step))
            fine[unknown] = up[unknown]
            if self.labels is not None:  # nearest (lower corner) of the coarser lattice
                coarse = self._view(self.labels, 2 * step)
                near = coarse[np.ix_(*[np.arange(n) // 2 for n in fine.shape])]
                self._view(self.labels, step)[unknown] = near[unknown]

    def _subdivide(self) -> None:
        """Mark the points of the next finer lattice inside surface cells; interpolate the rest."""
        occ = self._view(self.values) > self.threshold
        cshape = tuple(n - 1 for n in occ.shape)
        c_any = np.zeros(cshape, bool)
        c_all = np.ones(cshape, bool)
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    o = occ[dx:dx + cshape[0], dy:dy + cshape[1], dz:dz + cshape[2]]
                    c_any |= o
                    c_all &= o
        active = c_any & ~c_all  # cells whose 8 corners disagree
        if self.labels is not None:  # occupied corners of different labels
            lab = self._view(self.labels)
            lo = np.full(cshape, 255, np.uint8)
            hi = np.zeros(cshape, np.uint8)
            for dx in (0, 1):
                for dy in (0, 1):
                    for dz in (0, 1):
                        sl = np.s_[dx:dx + cshape[0], dy:dy + cshape[1], dz:dz + cshape[2]]
                        o = occ[sl]
                        lo = np.minimum(lo, np.where(o, lab[sl], 255))
                        hi = np.maximum(hi, np.where(o, lab[sl], 0))
            active |= c_any & (hi > lo)
        if self.dilate > 0 and active.any():
            active = ndimage.binary_dilation(active, np.ones((3, 3, 3), bool), iterations=self.dilate)
        pending = np.zeros(tuple(2 * n + 1 for n in cshape), bool)
        ex, ey, ez = (2 * n for n in cshape)
        for a in range(3):
            for b in range(3):
                for c in range(3):
                    pending[a:a + ex:2, b:b + ey:2, c:c + ez:2] |= active
        self.step //= 2
        self._pending = pending
        self.level_queries.append(0)
        self._fill(self.step)

    def to_dense(self) -> np.ndarray:
        """(Lx, Ly, Lz) float32: evaluated values, the others interpolated level by level."""
        s = self.step0
        while s > 1:
            s //= 2
            self._fill(s)
        return self.values.copy()

    def to_dense_labels(self) -> np.ndarray:
        """(Lx, Ly, Lz) uint8 labels: evaluated ones, the others from the nearest coarser sample."""
        if self.labels is None:
            raise ValueError("no labels were given to update()")
        self.to_dense()
        return self.labels.copy()


# ---------------------------------------------------------------------- multi-class wrapper
def _evaluate(decode_fn, points_lps_mm: np.ndarray, batch_points: int, on_batch=None):
    """Run decode_fn in batches -> (p_bone (M,) float32, bone label (M,) uint8).

    decode_fn(points (m, 3) float32 LPS mm) returns either (p_bone (m,), label (m,))
    or class probabilities (m, C) with class 0 = background.
    on_batch: optional ``callback(points done, points in all)`` after every batch.
    """
    ps, ls = [], []
    for i in range(0, len(points_lps_mm), batch_points):
        out = decode_fn(points_lps_mm[i:i + batch_points].astype(np.float32))
        if isinstance(out, tuple):
            p, lab = out
        else:
            probs = np.asarray(out, np.float32)
            p, lab = 1.0 - probs[:, 0], probs[:, 1:].argmax(1) + 1
        ps.append(np.asarray(p, np.float32).reshape(-1))
        ls.append(np.asarray(lab).reshape(-1).astype(np.uint8))
        if on_batch is not None:
            on_batch(min(i + batch_points, len(points_lps_mm)), len(points_lps_mm))
    if not ps:
        return np.zeros(0, np.float32), np.zeros(0, np.uint8)
    return np.concatenate(ps), np.concatenate(ls)


def lattice_plan(geometry, voxel_mm_final: float, start_voxel_mm: float):
    """(shape, origin (3,), spacing (3,), upsampling_steps, resolution0 (3,)) of the MISE lattice.

    shape/origin/spacing are ``geometry.box_grid(voxel_mm_final)``; the coarsest
    lattice samples every 2**steps-th voxel centre, steps = round(log2(start / final)).
    The lattice may run up to 2**steps - 1 voxels past the box's far faces (cropped).
    """
    shape, origin, spacing = geometry.box_grid(voxel_mm_final)
    steps = max(0, int(round(math.log2(max(start_voxel_mm, voxel_mm_final) / voxel_mm_final))))
    s0 = 2 ** steps
    r0 = tuple(max(1, math.ceil((n - 1) / s0)) for n in shape)
    return shape, np.asarray(origin, float), np.asarray(spacing, float), steps, r0


def extract_labels(decode_fn, geometry, voxel_mm_final: float = 2.0, start_voxel_mm: float = 4.0,
                   batch_points: int = 65536, threshold: float = 0.5, dilate: int = 1, progress=None):
    """Multi-class label volume of the reconstruction box by MISE.

    decode_fn: see :func:`_evaluate` (e.g. ``x2b.model.make_decode_fn``).
    MISE is driven by p_bone = 1 - p(background); a voxel is bone where the
    (evaluated or interpolated) p_bone > threshold. Cells where two bones touch
    (occupied corners with different argmax labels) are refined like surface
    cells. Every evaluated point keeps its argmax bone label; an occupied voxel
    never evaluated (inside a coarse cell) takes the label of the nearest
    evaluated point of the finest lattice that has one (coarse value).

    progress: optional ``callback(fraction, message)`` after every batch of queries; the
    fraction counts the lattice levels equally (level k of n: k / n, then the share of its
    points done), so it only grows.

    Returns (labels (X, Y, Z) uint8 on ``geometry.box_grid(voxel_mm_final)``,
    stats dict: queries, dense_queries, level_queries, time_decode_s, time_total_s,
    grid_shape, spacing_mm, origin_lps_mm, start_spacing_mm).
    """
    t0 = time.perf_counter()
    shape, origin, spacing, steps, r0 = lattice_plan(geometry, voxel_mm_final, start_voxel_mm)
    m = MISE(r0, steps, threshold, dilate)
    t_dec = 0.0
    pts = m.query()
    while len(pts):
        xyz = origin[None] + pts * spacing[None]
        t1 = time.perf_counter()
        on_batch = None
        if progress is not None:
            level, step_mm = len(m.level_queries) - 1, float(spacing[0]) * m.step

            def on_batch(done, total, level=level, step_mm=step_mm):
                progress((level + done / total) / (steps + 1), f"MISE level {level + 1} of {steps + 1} "
                         f"({step_mm:g} mm lattice): {done:,} of {total:,} points queried")
        p, lbl = _evaluate(decode_fn, xyz, batch_points, on_batch)
        t_dec += time.perf_counter() - t1
        m.update(pts, p, lbl)
        pts = m.query()
    nx, ny, nz = shape
    occ = m.to_dense()[:nx, :ny, :nz] > threshold
    lab = m.to_dense_labels()[:nx, :ny, :nz]
    labels = np.where(occ, lab, 0).astype(np.uint8)
    stats = dict(queries=int(sum(m.level_queries)), level_queries=list(map(int, m.level_queries)),
                 dense_queries=int(np.prod(shape)), time_decode_s=t_dec,
                 time_total_s=time.perf_counter() - t0, grid_shape=tuple(int(n) for n in shape),
                 spacing_mm=tuple(map(float, spacing)), origin_lps_mm=tuple(map(float, origin)),
                 start_spacing_mm=tuple(float(x) * 2 ** steps for x in spacing))
    return labels, stats


def dense_labels(decode_fn, geometry, voxel_mm: float = 2.0, batch_points: int = 65536,
                 threshold: float = 0.5):
    """Reference: evaluate every voxel centre of ``geometry.box_grid(voxel_mm)``.

    Returns (labels (X, Y, Z) uint8, stats dict like :func:`extract_labels`).
    """
    t0 = time.perf_counter()
    shape, origin, spacing = geometry.box_grid(voxel_mm)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    xyz = np.asarray(origin)[None] + idx * np.asarray(spacing)[None]
    t1 = time.perf_counter()
    p, lbl = _evaluate(decode_fn, xyz, batch_points)
    t_dec = time.perf_counter() - t1
    labels = np.where(p > threshold, lbl, 0).astype(np.uint8).reshape(shape)
    n = int(np.prod(shape))
    stats = dict(queries=n, level_queries=[n], dense_queries=n, time_decode_s=t_dec,
                 time_total_s=time.perf_counter() - t0, grid_shape=tuple(int(k) for k in shape),
                 spacing_mm=tuple(map(float, spacing)), origin_lps_mm=tuple(map(float, origin)),
                 start_spacing_mm=tuple(map(float, spacing)))
    return labels, stats
