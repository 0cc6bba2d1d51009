"""Deformable coherent point drift (CPD) with a Gaussian or a geodesic kernel, in torch.

Myronenko & Song, "Point Set Registration: Coherent Point Drift" (TPAMI 2010), with the
geodesic kernel and "downsample, register, interpolate" scheme of Hirose's GBCPD/GBCPD++
(the kernel between two source vertices is ``exp(-d^2 / (2 beta^2))`` with ``d`` the
shortest-path distance on the source mesh graph, so separate components - one per bone -
deform independently). The EM updates match ``pycpd.DeformableRegistration`` exactly
(same initial ``sigma2``, same M-step ``(diag(P1) G + lam sigma2 I) W = P X - diag(P1) Y``,
same ``sigma2`` update and stopping rule ``|sigma2 - sigma2_prev| <= tol``).

Frames and units: source ``Y`` (M, 3) and target ``X`` (N, 3) are points in one frame
(LPS mm in X2BR); ``beta`` is in the same length unit, ``lam`` in 1/length^2 (CPD is not
scale-invariant). Both clouds are centred on the target mean internally (exact: CPD is
translation-invariant) to keep float32 distances accurate.

Memory: the E-step never forms the M x N posterior; it walks the target in column chunks
(``chunk`` targets, default 2^20 / M on CPU, 2^26 / M on CUDA) accumulating ``P1`` (M,), ``Pt1`` (N,), ``P X``
(M, 3) and the negative log-likelihood in float64. The kernel is dense (m, m) for small
sources, else a rank-r Nystrom factor ``G ~= Q Q^T`` (Q (m, r)) and the M-step is solved
with the Woodbury identity in O(m r^2). Device follows the inputs (CPU or CUDA); graph
distances (scipy) and point sampling run on the CPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

_CHUNK_ELEMS = 1 << 20      # E-step block size in elements (~4 MB per float32 temporary; measured best on 2 cores)
_CHUNK_ELEMS_GPU = 1 << 26  # on CUDA (256 MB per float32 temporary): fewer kernel launches
DENSE_MAX = 3000            # largest registered source size that uses the dense kernel
DEFAULT_LANDMARKS = 500     # Nystrom landmarks when the low-rank path is chosen by size
_EXP_FLOOR = {torch.float32: -80.0, torch.float64: -700.0}


@dataclass
class CPDResult:
    """``points`` (M, 3) deformed source (torch, input dtype/device, input frame);
    ``W`` (m, 3) kernel weights of the m registered (possibly downsampled) source points;
    ``sigma2`` final variance (length^2); ``iterations`` EM iterations run; ``history``
    one dict per iteration: ``iteration``, ``sigma2``, ``nll`` (data negative log-likelihood
    at the E-step), ``seconds``; ``indices`` (m,) source indices that were registered."""
    points: torch.Tensor
    W: torch.Tensor
    sigma2: float
    iterations: int
    history: list = field(default_factory=list)
    indices: np.ndarray | None = None


@dataclass
class EStats:
    """E-step sufficient statistics (float64): ``P1`` (M,), ``Pt1`` (N,), ``PX`` (M, D),
    ``Np`` sum of P, ``nll`` negative log-likelihood over targets with a matching source."""
    P1: torch.Tensor
    Pt1: torch.Tensor
    PX: torch.Tensor
    Np: float
    nll: float


# ------------------------------------------------------------------ pure helpers
def initial_sigma2(X: torch.Tensor, Y: torch.Tensor) -> float:
    """pycpd's initial variance ``sum_{m,n} |x_n - y_m|^2 / (D M N)`` in closed form."""
    X, Y = X.double(), Y.double()
    N, D = X.shape
    M = Y.shape[0]
    s = M * (X * X).sum() + N * (Y * Y).sum() - 2.0 * (X.sum(0) * Y.sum(0)).sum()
    return float(s) / (D * M * N)


def farthest_point_sample(points: np.ndarray, k: int, start: int = 0) -> np.ndarray:
    """Indices (k,) of a greedy farthest-point subsample of ``points`` (M, D), from ``start``.

    Per coordinate column into preallocated buffers: the same squared distances, summed in
    the same order, as ``((pts - p) ** 2).sum(1)``, so the same indices, about 8x faster
    (3,000 of 28,275 template points: 0.34 s instead of 2.97 s on the 2-core CPU)."""
    pts = np.asarray(points, dtype=np.float64)
    k = min(int(k), len(pts))
    idx = np.empty(k, dtype=np.int64)
    if k == 0:
        return idx
    cols = [np.ascontiguousarray(pts[:, j]) for j in range(pts.shape[1])]
    d, t, u = (np.empty(len(pts)) for _ in range(3))

    def sq_dist(i, out):  # out = sum_j (cols[j] - cols[j][i])^2, in column order
        np.subtract(cols[0], cols[0][i], out=out)
        np.multiply(out, out, out=out)
        for c in cols[1:]:
            np.subtract(c, c[i], out=u)
            np.multiply(u, u, out=u)
            np.add(out, u, out=out)
        return out

    idx[0] = start
    sq_dist(start, d)
    for i in range(1, k):
        idx[i] = int(np.argmax(d))
        np.minimum(d, sq_dist(idx[i], t), out=d)
    return idx


def mesh_graph(points: np.ndarray, edges: np.ndarray):
    """Symmetric scipy CSR graph (M, M) with Euclidean edge lengths; duplicates removed."""
    from scipy.sparse import csr_matrix
    e = np.sort(np.asarray(edges, dtype=np.int64).reshape(-1, 2), axis=1)
    e = np.unique(e[e[:, 0] != e[:, 1]], axis=0)
    pts = np.asarray(points, dtype=np.float64)
    w = np.maximum(np.linalg.norm(pts[e[:, 0]] - pts[e[:, 1]], axis=1), 1e-12)
    M = len(pts)
    return csr_matrix((np.r_[w, w], (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(M, M))


def geodesic_kernel_rows(graph, sources: np.ndarray, beta: float) -> np.ndarray:
    """``exp(-d^2 / (2 beta^2))`` (len(sources), M) float64 from Dijkstra geodesic distances;
    0 across components (d = inf) and beyond 8 beta (kernel < 1e-13)."""
    from scipy.sparse.csgraph import dijkstra
    d = dijkstra(graph, directed=False, indices=np.asarray(sources), limit=8.0 * beta)
    return np.exp(-(d * d) / (2.0 * beta * beta))


def gaussian_kernel(A: torch.Tensor, B: torch.Tensor, beta: float) -> torch.Tensor:
    """``exp(-|a_i - b_j|^2 / (2 beta^2))`` (len(A), len(B)) in A's dtype/device."""
    d2 = torch.cdist(A, B, compute_mode="donot_use_mm_for_euclid_dist").square_()
    return torch.exp_(d2.mul_(-0.5 / beta ** 2))


def nystrom_factor(C: np.ndarray, U: np.ndarray, rank: int | None = None, rel_eps: float = 1e-10) -> np.ndarray:
    """Q (M, r') with ``Q Q^T = C U^+ C^T`` restricted to the top ``rank`` positive
    eigenvalues of ``U`` (those above ``rel_eps * max``): C (M, L) kernel to L landmarks,
    U (L, L) landmark kernel, float64. Non-positive eigenvalues (a geodesic kernel need not
    be positive definite) are dropped, so the approximation is positive semi-definite."""
    lam, V = np.linalg.eigh(0.5 * (U + U.T))
    order = np.argsort(lam)[::-1]
    lam, V = lam[order], V[:, order]
    keep = lam > rel_eps * max(lam[0], 0.0) if lam[0] > 0 else np.zeros(len(lam), bool)
    if rank is not None:
        keep[int(rank):] = False
    return C @ (V[:, keep] / np.sqrt(lam[keep]))


def e_step(Y: torch.Tensor, X: torch.Tensor, sigma2: float, w: float = 0.0,
           labels_y: torch.Tensor | None = None, labels_x: torch.Tensor | None = None,
           chunk: int | None = None, sizes: tuple[int, int] | None = None) -> EStats:
    """Chunked CPD E-step. Y (M, D) current source, X (N, D) target (same dtype/device).

    Posterior ``P[m, n] = e_mn / (sum_{m'} e_m'n + c)``, ``e = exp(-|x_n - y_m|^2 / 2 sigma2)``,
    ``c = (2 pi sigma2)^(D/2) w / (1 - w) M / N`` (pycpd). With labels (int (M,), (N,)),
    ``e_mn = 0`` unless the labels match; a target with no matching source gets P = 0.
    Each column is computed relative to its nearest source (log-sum-exp), so far targets do
    not underflow. Peak extra memory ~3 M * chunk elements. sizes: the whole problem's
    (M, N) for the outlier constant and the likelihood when Y, X are one label's block."""
    M, D = Y.shape
    N = X.shape[0]
    Mt, Nt = sizes if sizes is not None else (M, N)
    elems = _CHUNK_ELEMS if Y.device.type == "cpu" else _CHUNK_ELEMS_GPU
    chunk = max(1, elems // max(M, 1)) if chunk is None else int(chunk)
    f64 = dict(dtype=torch.float64, device=Y.device)
    P1, Pt1, PX = torch.zeros(M, **f64), torch.zeros(N, **f64), torch.zeros(M, D, **f64)
    logc = (math.log(w / (1 - w)) + 0.5 * D * math.log(2 * math.pi * sigma2) + math.log(Mt / Nt)) if w > 0 else -math.inf
    inv = 0.5 / sigma2
    yyi = ((Y * Y).sum(1) * -inv)[None, :]                  # (1, M)
    floor = _EXP_FLOOR.get(Y.dtype, -math.inf)
    nll = torch.zeros((), **f64)
    n_valid = torch.zeros((), dtype=torch.int64, device=Y.device)
    for s in range(0, N, chunk):
        Xc = X[s:s + chunk]
        # one row per target (reductions run along contiguous memory):
        # g = (|x|^2 - |x - y|^2) / (2 sigma2); the per-target |x|^2 cancels in the posterior
        g = torch.addmm(yyi, Xc, Y.T, alpha=2.0 * inv)          # (chunk, M)
        mask = None
        if labels_y is not None:
            mask = labels_x[s:s + chunk, None] != labels_y[None, :]
            g.masked_fill_(mask, -math.inf)
        gmax = g.amax(1)
        valid = torch.isfinite(gmax)
        gmax = torch.where(valid, gmax, torch.zeros_like(gmax))
        # K = e_mn * exp(a_n), a_n = min_m |x_n - y_m|^2 / 2 sigma2; exponents clamped above the
        # subnormal range (exp of subnormals is ~10x slower on CPU; those terms are < 1e-34 of the max)
        K = torch.exp_(g.sub_(gmax[:, None]).clamp_min_(floor))
        if mask is not None:
            K.masked_fill_(mask, 0.0)
        ssum = K.sum(1)
        a = (Xc * Xc).sum(1).double() * inv - gmax.double()
        logden = torch.logaddexp(torch.log(ssum.double()), logc + a)
        den = torch.exp(logden).to(K.dtype)
        den = torch.where(den > 0, den, torch.ones_like(den))
        R = (torch.cat([Xc / den[:, None], (1.0 / den)[:, None]], 1).T @ K).T.double()   # (M, D + 1)
        PX += R[:, :D]
        P1 += R[:, D]
        Pt1[s:s + chunk] = (ssum / den).double()
        nll -= torch.where(valid, logden - a, torch.zeros_like(a)).sum()   # no host sync per chunk
        n_valid += valid.sum()
    nll = float(nll) + int(n_valid) * (0.5 * D * math.log(2 * math.pi * sigma2) - math.log((1 - w) / Mt))
    return EStats(P1, Pt1, PX, float(P1.sum()), nll)


def label_groups(labels_y: torch.Tensor, labels_x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(source indices, target indices)] per label present in both (the E-step's blocks)."""
    out = []
    for lab in torch.unique(labels_y).tolist():
        iy = torch.nonzero(labels_y == lab).flatten()
        ix = torch.nonzero(labels_x == lab).flatten()
        if len(ix):
            out.append((iy, ix))
    return out


def e_step_grouped(Y: torch.Tensor, X: torch.Tensor, sigma2: float, w: float, groups,
                   chunk: int | None = None) -> EStats:
    """The labelled E-step one label at a time: equal to ``e_step`` with labels (posterior zero
    across labels) at sum_l M_l N_l instead of M N work (45 bones: ~45x less)."""
    M, D = Y.shape
    N = X.shape[0]
    f64 = dict(dtype=torch.float64, device=Y.device)
    P1, Pt1, PX = torch.zeros(M, **f64), torch.zeros(N, **f64), torch.zeros(M, D, **f64)
    nll = 0.0
    for iy, ix in groups:
        st = e_step(Y[iy], X[ix], sigma2, w, chunk=chunk, sizes=(M, N))
        P1[iy] = st.P1
        Pt1[ix] = st.Pt1
        PX[iy] = st.PX
        nll += st.nll
    return EStats(P1, Pt1, PX, float(P1.sum()), nll)


def posterior_dense(Y, X, sigma2, w=0.0, labels_y=None, labels_x=None) -> torch.Tensor:
    """The full (M, N) posterior as pycpd forms it (for tests and small problems only)."""
    M, D = Y.shape
    N = X.shape[0]
    P = torch.exp(-torch.cdist(Y, X).square() / (2 * sigma2))
    if labels_y is not None:
        P = P * (labels_y[:, None] == labels_x[None, :])
    c = (2 * math.pi * sigma2) ** (D / 2) * w / (1 - w) * M / N
    den = P.sum(0)
    den = torch.where(den == 0, torch.full_like(den, torch.finfo(P.dtype).eps), den) + c
    return P / den


def m_step_dense(G: torch.Tensor, P1: torch.Tensor, B0: torch.Tensor, s: float) -> torch.Tensor:
    """W (m, D) solving ``(diag(P1) G + s I) W = B0`` with ``B0 = P X - diag(P1) Y`` (pycpd)."""
    A = P1[:, None] * G
    A.diagonal().add_(s)
    return torch.linalg.solve(A, B0)


def m_step_lowrank(Q: torch.Tensor, P1: torch.Tensor, B0: torch.Tensor, s: float):
    """Woodbury form of :func:`m_step_dense` for ``G = Q Q^T`` (Q (m, r)): returns
    (z (r, D), W (m, D)) with ``z = Q^T W = (s I + Q^T diag(P1) Q)^-1 Q^T B0`` and
    ``W = (B0 - diag(P1) Q z) / s``; the displacement ``G W = Q z`` has no cancellation.
    O(m r^2): the Gram ``Q^T diag(P1) Q`` in the working dtype, the r x r solve in float64."""
    A = (Q.T @ (P1[:, None] * Q)).double()
    A.diagonal().add_(s)
    z = torch.linalg.solve(A, (Q.T @ B0).double()).to(Q.dtype)
    W = (B0 - P1[:, None] * (Q @ z)) / s
    return z, W


def update_sigma2(X, TY, st: EStats, tol: float) -> float:
    """CPD variance ``(tr(X^T d(Pt1) X) - 2 tr((PX)^T TY) + tr(TY^T d(P1) TY)) / (Np D)``
    in float64; ``tol / 10`` when it is not positive (pycpd)."""
    X, TY = X.double(), TY.double()
    xPx = float(st.Pt1 @ (X * X).sum(1))
    yPy = float(st.P1 @ (TY * TY).sum(1))
    tr = float((TY * st.PX).sum())
    s2 = (xPx - 2 * tr + yPy) / (st.Np * X.shape[1]) if st.Np > 0 else 0.0
    return s2 if s2 > 0 else tol / 10


# ------------------------------------------------------------------ kernels
@dataclass
class BlockFactor:
    """A block-diagonal kernel factor, one block per mesh component (bone): ``G ~= Q Q^T``
    with ``Q`` zero outside its component's rows. ``rows[c]``: the registered points (indices
    into ``sub``) of component c, ``Q_sub[c]`` (len(rows[c]), r_c) their factor rows;
    ``verts[c]``: all source points of c, ``Q_all[c]`` (len(verts[c]), r_c). The M-step and
    the interpolation then cost sum_c m_c r_c^2 instead of m r^2."""
    rows: list
    Q_sub: list
    verts: list
    Q_all: list

    def dense(self, m: int, M: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q_sub (m, r), Q_all (M, r)) assembled (tests, small problems)."""
        r = sum(q.shape[1] for q in self.Q_sub)
        Qs, Qa, off = np.zeros((m, r)), np.zeros((M, r)), 0
        for rows, qs, verts, qa in zip(self.rows, self.Q_sub, self.verts, self.Q_all):
            Qs[rows, off:off + qs.shape[1]] = qs
            Qa[verts, off:off + qa.shape[1]] = qa
            off += qs.shape[1]
        return Qs, Qa


def geodesic_blocks(Y_all: np.ndarray, sub: np.ndarray, beta: float, edges, lowrank: bool = False,
                    landmarks: int = DEFAULT_LANDMARKS, rank: int | None = None) -> BlockFactor:
    """The geodesic kernel's factor, one Nystrom block per mesh component (Dijkstra on the
    component's own sub-graph, so memory is per bone, not landmarks x all points)."""
    M = len(Y_all)
    graph = mesh_graph(Y_all, edges)
    n_comp, comp = _components(graph)
    pos = np.full(M, -1, np.int64)
    pos[sub] = np.arange(len(sub))
    out = BlockFactor([], [], [], [])
    graph = graph.tocsr()
    for verts, L, r in _landmarks_per_component(Y_all, sub, comp, n_comp, landmarks if lowrank else len(sub), rank):
        local = np.full(M, -1, np.int64)
        local[verts] = np.arange(len(verts))
        C = geodesic_kernel_rows(graph[verts][:, verts], local[L], beta).T      # (M_c, L_c)
        Qc = nystrom_factor(C, C[local[L]], r)
        in_sub = pos[verts] >= 0
        if not in_sub.any():
            continue
        out.rows.append(pos[verts[in_sub]])
        out.Q_sub.append(Qc[in_sub])
        out.verts.append(verts)
        out.Q_all.append(Qc)
    return out


def _components(graph) -> tuple[int, np.ndarray]:
    from scipy.sparse.csgraph import connected_components
    return connected_components(graph, directed=False)


def _landmarks_per_component(pts, sub, comp_labels, n_comp, total, rank):
    """[(vertices, landmarks, rank_c)] per component; landmarks are farthest-point samples of
    the component's registered vertices, split by their count (>= 1 each); all of them when
    ``total >= len(sub)``."""
    out, m = [], len(sub)
    for c in range(n_comp):
        verts = np.flatnonzero(comp_labels == c)
        pool = sub[comp_labels[sub] == c]
        if len(pool) == 0:
            pool = verts
        k = len(pool) if total >= m else max(1, min(len(pool), int(round(total * len(pool) / m))))
        r = None if rank is None else max(1, int(round(rank * len(pool) / m)))
        out.append((verts, pool[farthest_point_sample(pts[pool], k)], r))
    return out


def build_kernel(Y_all: np.ndarray, sub: np.ndarray, kernel: str, beta: float, edges=None,
                 lowrank: bool = False, landmarks: int = DEFAULT_LANDMARKS, rank: int | None = None):
    """Kernel of the registered points ``Y_all[sub]`` and to all points, float64 numpy.

    Returns ``(K_sub, K_all, factored)``. Dense Gaussian: (G_sub (m, m), G_all (M, m), False).
    Otherwise a factor ``G ~= Q Q^T``: (Q_sub (m, r), Q_all (M, r), True). The geodesic
    kernel is always factored (it is not positive definite in general: the factor keeps its
    positive eigen-part, exactly so when every registered point is a landmark), one Nystrom
    block per mesh component, so rows of different components are exactly orthogonal (no
    coupling between bones)."""
    if kernel == "gaussian":
        Yt = torch.as_tensor(Y_all, dtype=torch.float64)
        if not lowrank:
            G_all = gaussian_kernel(Yt, Yt[sub], beta).numpy()
            return G_all[sub], G_all, False
        L = sub[farthest_point_sample(Y_all[sub], landmarks)]
        C = gaussian_kernel(Yt, Yt[L], beta).numpy()
        Q_all = nystrom_factor(C, C[L], rank)
        return Q_all[sub], Q_all, True
    if kernel != "geodesic":
        raise ValueError(f"kernel must be 'gaussian' or 'geodesic', got {kernel!r}")
    if edges is None:
        raise ValueError("the geodesic kernel needs the source mesh 'edges' (E, 2)")
    Q_sub, Q_all = geodesic_blocks(Y_all, sub, beta, edges, lowrank, landmarks, rank).dense(len(sub), len(Y_all))
    return Q_sub, Q_all, True


# ------------------------------------------------------------------ driver
def _tensor(a, device, dtype):
    return torch.as_tensor(a).to(device=device, dtype=dtype)


def deformable_cpd(source, target, *, kernel: str = "gaussian", beta: float = 2.0, lam: float = 2.0,
                   w: float = 0.0, max_iter: int = 100, tol: float = 1e-5, source_labels=None,
                   target_labels=None, edges=None, rank: int | None = None,
                   nystrom_points: int | None = None, downsample: int | None = None,
                   chunk: int | None = None, device=None, dtype=torch.float32,
                   callback: Callable | None = None) -> CPDResult:
    """Register ``source`` (M, 3) onto ``target`` (N, 3) (numpy or torch, same frame, e.g.
    LPS mm) with deformable CPD; returns :class:`CPDResult`, ``points`` (M, 3) torch.

    kernel: "gaussian" (Euclidean) or "geodesic" (shortest paths on the source mesh graph
    ``edges`` (E, 2) int; components are independent). beta: kernel width (length);
    lam: regularisation (pycpd's alpha); w in [0, 1): outlier weight. source_labels (M,),
    target_labels (N,) ints: correspondences only between equal labels. downsample: register
    that many farthest-point-sampled source points and interpolate the displacement to all
    (GBCPD++). Low-rank (Nystrom, Woodbury M-step) when ``rank`` or ``nystrom_points`` is
    given or more than DENSE_MAX points are registered: ``nystrom_points`` landmarks
    (default 500, or 2 * rank), ``rank`` eigenvectors kept (default: all positive). The
    geodesic kernel is always used as a factor ``Q Q^T`` (its positive eigen-part; every
    registered point is a landmark unless the low-rank path applies).
    device: default the source tensor's device (CPU for numpy); dtype: working precision.
    callback(iteration=, sigma2=, nll=, points=) is called after every iteration.
    """
    import time
    if device is None:
        device = source.device if isinstance(source, torch.Tensor) else torch.device("cpu")
    Y_np = (source.detach().cpu().double().numpy() if isinstance(source, torch.Tensor)
            else np.asarray(source, dtype=np.float64))
    X = _tensor(target, device, torch.float64)
    centre = X.mean(0)
    X = (X - centre).to(dtype)
    Y_np = Y_np - centre.cpu().numpy()
    M = len(Y_np)
    sub = (np.arange(M) if downsample is None or downsample >= M
           else np.sort(farthest_point_sample(Y_np, downsample)))
    m = len(sub)
    lowrank = rank is not None or nystrom_points is not None or m > DENSE_MAX
    landmarks = min(m, nystrom_points or (2 * rank if rank else DEFAULT_LANDMARKS))
    blocks = None
    if kernel == "geodesic":
        if edges is None:
            raise ValueError("the geodesic kernel needs the source mesh 'edges' (E, 2)")
        bf = geodesic_blocks(Y_np, sub, beta, edges, lowrank, landmarks, rank)
        blocks = [(torch.as_tensor(r, device=device), _tensor(q, device, dtype)) for r, q in zip(bf.rows, bf.Q_sub)]
        lowrank = True
    else:
        K_sub, K_all, lowrank = build_kernel(Y_np, sub, kernel, beta, edges, lowrank, landmarks, rank)
        K_sub = _tensor(K_sub, device, dtype)
    Y = _tensor(Y_np[sub], device, dtype)
    groups = None
    if source_labels is not None or target_labels is not None:
        if source_labels is None or target_labels is None:
            raise ValueError("give both source_labels and target_labels, or neither")
        ly = _tensor(np.asarray(torch.as_tensor(source_labels).cpu())[sub], device, torch.int64)
        lx = _tensor(target_labels, device, torch.int64)
        groups = label_groups(ly, lx)
    sigma2 = initial_sigma2(X, Y)
    TY, W, z = Y, torch.zeros_like(Y), None
    history, it = [], 0
    for it in range(1, max_iter + 1):
        t0 = time.perf_counter()
        st = e_step(TY, X, sigma2, w, chunk=chunk) if groups is None else \
            e_step_grouped(TY, X, sigma2, w, groups, chunk)
        s = lam * sigma2
        B0 = (st.PX - st.P1[:, None] * Y.double()).to(dtype)
        P1 = st.P1.to(dtype)
        if blocks is not None:
            z, W, TY = [], torch.zeros_like(Y), Y.clone()
            for rows, Q in blocks:
                zc, Wc = m_step_lowrank(Q, P1[rows], B0[rows], s)
                z.append(zc)
                W[rows] = Wc
                TY[rows] = Y[rows] + Q @ zc
        elif lowrank:
            z, W = m_step_lowrank(K_sub, P1, B0, s)
            TY = Y + K_sub @ z
        else:
            W = m_step_dense(K_sub, P1, B0, s)
            TY = Y + K_sub @ W
        prev, sigma2 = sigma2, update_sigma2(X, TY, st, tol)
        history.append(dict(iteration=it, sigma2=sigma2, nll=st.nll, seconds=time.perf_counter() - t0))
        if callback is not None:
            callback(iteration=it, sigma2=sigma2, nll=st.nll, points=TY + centre.to(dtype))
        if abs(sigma2 - prev) <= tol:
            break
    if blocks is not None:
        out = _tensor(Y_np, device, dtype)
        if z is not None:
            for verts, Qa, zc in zip(bf.verts, bf.Q_all, z):
                out[torch.as_tensor(verts, device=device)] += _tensor(Qa, device, dtype) @ zc
    elif m == M:
        out = TY
    else:
        K_all = _tensor(K_all, device, dtype)
        out = _tensor(Y_np, device, dtype) + K_all @ (z if lowrank else W)
    return CPDResult(out + centre.to(dtype), W, sigma2, it, history, sub)
