"""X2B network: ConvNeXt image encoder + pixel-aligned implicit occupancy decoder.

Following X2BR (Guven et al. 2025): a ConvNeXt encoder reads the radiograph
once; an implicit decoder classifies any 3D query point (LPS mm) as background
or one of the catalog bones. Each point is projected onto the film with the
batch's camera (``ProjectionGeometry.projection_matrix()``, the one camera
model of X2BR) and every encoder feature map is sampled there bilinearly
(pixel-aligned features, as in PIFu); a Fourier encoding of the point in the
unit box and of its depth along the beam, plus a global code of the whole
film, complete the per-point input of an Occupancy-Networks style residual MLP.

Shapes: image (B, 1, H, W) float in [0, 1] (bone-bright, as the dataset shards
store it; H and W multiples of 32); P (B, 3, 4) projection matrices mapping LPS
mm to pixel (column, row); iso (B, 3) isocentre LPS mm; box_scale (B,) or float,
the largest side of the reconstruction box in mm; points (B, N, 3) LPS mm.
Output logits (B, N, num_classes), class 0 = background, class k = catalog
label k (X2BRLib.anatomy).

Two views (``views=2``, issue 15): a PA and a lateral film of one study. The one
encoder reads each film; each query point is projected into each view with that
view's camera and the pixel-aligned features (and the global codes) of the views a
case has are fused (``fusion``: "mean", elementwise "max", or "concat": the lateral's
features get their own projections ``fc_clat``/``fc_glat``, added to the PA ones, so the
decoder knows which view saw what; the same as concatenating them; or "attn": per point and
per feature level, weights over the views from a small scorer of each view's features and
in-view flag, softmax across the views, so a view that sees a point badly counts less; the
global codes are averaged); ``has_lat`` (B,)
float, 1 where the case has a lateral, masks it per case. The lateral also adds
``has_lat * fc_lat(in-view flag of the lateral)`` to the decoder's input (its bias
is the learned "lateral present" embedding). With has_lat = 0 (or no lateral
given) the computation is exactly the single-view one, so one set of weights
serves PA alone and PA + lateral, and single-view weights grow into a two-view
model that starts computing what they compute (:func:`grow_from`).

Numerics: projection, positional encoding and feature sampling always run in
float32 with autocast disabled (bf16 would put query points off by pixels);
only the MLP and the encoder follow autocast.
"""
from __future__ import annotations

import math

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..anatomy import NUM_CLASSES
from ..geometry import project_points, uv_to_grid_sample

FUSIONS = ("mean", "max", "concat", "attn")
VARIANTS = {"atto": "convnext_atto", "femto": "convnext_femto", "pico": "convnext_pico"}


def encoder_name(name: str) -> str:
    """Variant short name (``atto``) or timm name (``convnext_atto``) -> timm name."""
    return VARIANTS.get(name, name)


class ResnetBlockFC(nn.Module):
    """Occupancy Networks' fully connected residual block (no normalisation)."""

    def __init__(self, size: int):
        super().__init__()
        self.fc_0 = nn.Linear(size, size)
        self.fc_1 = nn.Linear(size, size)
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x):
        return x + self.fc_1(F.relu(self.fc_0(F.relu(x))))


def fourier_features(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """(..., D) -> (..., D * (1 + 2 n_freqs)): x, sin(2^k pi x), cos(2^k pi x)."""
    if n_freqs <= 0:
        return x
    freqs = (2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype)) * math.pi
    xf = x.unsqueeze(-1) * freqs  # (..., D, F)
    return torch.cat([x, torch.sin(xf).flatten(-2), torch.cos(xf).flatten(-2)], -1)


class X2BNet(nn.Module):
    """Radiograph -> per-point bone class logits.

    encoder: timm ConvNeXt name or variant (atto/femto/pico); created with
        pretrained=False (nothing is downloaded), in_chans=1, features_only.
    hidden: width of the decoder MLP; n_blocks: residual blocks.
    feat_dim: channels each feature level is reduced to (1x1 conv) before sampling.
    pos_freqs: Fourier frequencies of the positional encoding.
    hires: channels of a full-resolution branch (two 3x3 convolutions on the film,
        sampled like the encoder levels; 0 = none). ConvNeXt's finest level has
        stride 4 (about 6 mm on a 256 px chest film), coarser than a rib is tall.
    views: 1 (a PA film) or 2 (PA, optionally with a lateral film; see the module doc).
    fusion: how the views' features are fused when views == 2: "mean", "max", "concat" or "attn".
    ``self.config`` holds these kwargs (the weights record stores them).
    """

    def __init__(self, encoder: str = "convnext_atto", num_classes: int = NUM_CLASSES,
                 hidden: int = 128, n_blocks: int = 4, feat_dim: int = 64, pos_freqs: int = 6,
                 hires: int = 0, views: int = 1, fusion: str = "mean"):
        super().__init__()
        encoder = encoder_name(encoder)
        if int(views) not in (1, 2):
            raise ValueError(f"views must be 1 or 2, got {views}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        self.config = dict(encoder=encoder, num_classes=int(num_classes), hidden=int(hidden),
                           n_blocks=int(n_blocks), feat_dim=int(feat_dim), pos_freqs=int(pos_freqs))
        if hires:  # recorded only when used: records of older weights stay valid as they are
            self.config["hires"] = int(hires)
        if int(views) == 2:  # likewise: no "views" key = one view
            self.config.update(views=2, fusion=fusion)
        self.views, self.fusion = int(views), fusion
        self.encoder = timm.create_model(encoder, pretrained=False, features_only=True,
                                         in_chans=1, out_indices=(0, 1, 2, 3))
        chans = list(self.encoder.feature_info.channels())
        self.strides = list(self.encoder.feature_info.reduction())
        self.align = max(self.strides)
        self.reduce = nn.ModuleList(nn.Conv2d(c, feat_dim, 1) for c in chans)
        self.hires = (nn.Sequential(nn.Conv2d(1, hires, 3, padding=1), nn.GELU(),
                                    nn.Conv2d(hires, hires, 3, padding=1)) if hires else None)
        self.global_fc = nn.Linear(chans[-1], hidden)
        self.pos_freqs = pos_freqs
        # unit-box xyz (3) + depth (1), each Fourier-encoded; + in-view flag
        pe_dim = 4 * (1 + 2 * pos_freqs) + 1
        c_dim = feat_dim * len(chans) + int(hires)
        self.fc_p = nn.Linear(pe_dim, hidden)
        self.fc_c = nn.ModuleList(nn.Linear(c_dim, hidden) for _ in range(n_blocks))
        self.fc_g = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_blocks))
        self.blocks = nn.ModuleList(ResnetBlockFC(hidden) for _ in range(n_blocks))
        self.fc_out = nn.Linear(hidden, num_classes)
        # the lateral's in-view flag (weight) and "a lateral is present" (bias), added to the input
        self.fc_lat = nn.Linear(1, hidden) if self.views == 2 else None
        if self.views == 2 and fusion == "concat":  # the lateral's own feature and global-code projections
            self.fc_clat = nn.Linear(c_dim, hidden * n_blocks)
            self.fc_glat = nn.Linear(hidden, hidden)
        # attn: one weight per feature level (and the hires branch) per view, from its features + in-view flag
        self.groups = [feat_dim] * len(chans) + ([int(hires)] if hires else [])
        if self.views == 2 and fusion == "attn":
            self.att = nn.Sequential(nn.Linear(c_dim + 1, hidden // 2), nn.ReLU(),
                                     nn.Linear(hidden // 2, len(self.groups)))

    # ------------------------------------------------------------------ encoder
    def encode(self, image: torch.Tensor):
        """image (B, 1, H, W) -> (feats: list of (B, feat_dim, H/s, W/s) per encoder level, then the
        full-resolution branch's (B, hires, H, W) if any; global code (B, hidden))."""
        if image.ndim != 4 or image.shape[1] != 1:
            raise ValueError(f"image must be (B, 1, H, W), got {tuple(image.shape)}")
        h, w = image.shape[-2:]
        if h % self.align or w % self.align:
            raise ValueError(f"image height and width must be multiples of {self.align}, got {w}x{h}")
        maps = self.encoder(image)
        feats = [red(m) for red, m in zip(self.reduce, maps)]
        if self.hires is not None:
            feats.append(self.hires(image))
        glob = self.global_fc(maps[-1].mean((-2, -1)))
        return feats, glob

    # ------------------------------------------------------------------ decoder
    def _sample(self, maps, P: torch.Tensor, points: torch.Tensor):
        """Project points (B, N, 3) LPS mm with P (B, 3, 4) onto the film of ``maps`` and sample
        every map there (float32, autocast off). Returns (features (B, C, N), in-view flag (B, N, 1),
        depth (B, N) mm along the view's normal)."""
        size_px = (maps[0].shape[-1] * self.strides[0], maps[0].shape[-2] * self.strides[0])  # (W, H)
        uv, depth = project_points(P, points)  # (B, N, 2) px, (B, N) mm
        grid = uv_to_grid_sample(uv, size_px)
        grid = torch.nan_to_num(grid, nan=2.0, posinf=2.0, neginf=-2.0).clamp(-2.0, 2.0)
        inview = (grid.abs() <= 1).all(-1, keepdim=True).float()
        # sampled in float32: a bf16 grid would be off by up to half a pixel
        sampled = [F.grid_sample(m.float(), grid.unsqueeze(2), mode="bilinear",
                                 padding_mode="zeros", align_corners=False).squeeze(-1)
                   for m in maps]  # each (B, C, N)
        return torch.cat(sampled, 1), inview, depth

    def _fuse(self, a: torch.Tensor, b: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
        """Fuse PA features ``a`` with lateral features ``b`` (same shape, batch first) where
        ``has`` (B,) is 1; exactly ``a`` where it is 0."""
        h = has.reshape(-1, *([1] * (a.ndim - 1))).to(a.dtype)
        if self.fusion == "max":
            return torch.where(h > 0, torch.maximum(a, b), a)
        return (a + h * b) / (1 + h)

    def _attend(self, c, inview, c_lat, inview_lat, has) -> torch.Tensor:
        """Attention fusion of per-point features c, c_lat (B, C, N) with in-view flags (B, N, 1):
        per point and feature group, softmax over the views of the scorer's outputs; the lateral's
        score is -inf where ``has`` (B,) is 0, so those cases get exactly ``c``. A zero last layer
        (as grow_from sets it) weighs both views 0.5: mean fusion."""
        s = torch.stack([self.att(torch.cat([x.transpose(1, 2), f], -1))
                         for x, f in ((c, inview), (c_lat, inview_lat))])  # (2, B, N, G)
        off = torch.full_like(s[1], float("-inf"))
        s = torch.stack([s[0], torch.where(has.reshape(-1, 1, 1) > 0, s[1], off)])
        w = torch.softmax(s, 0).repeat_interleave(torch.tensor(self.groups, device=s.device), -1)
        w = w.transpose(2, 3)  # (2, B, C, N)
        return w[0] * c + w[1] * torch.nan_to_num(c_lat)

    def decode(self, feats, P: torch.Tensor, iso: torch.Tensor, points: torch.Tensor,
               box_scale=384.0, feats_lat=None, P_lat=None, has_lat=None) -> torch.Tensor:
        """Classify query points from an encoding.

        feats: (list of maps, global code) as returned by :meth:`encode`.
        P (B, 3, 4); iso (B, 3); points (B, N, 3) LPS mm; box_scale (B,) or float mm.
        feats_lat, P_lat, has_lat: the lateral film's encoding, its camera (B, 3, 4) and (B,)
        float 1/0 per case (default all 1); only for views == 2, None = PA alone.
        Returns logits (B, N, num_classes) (float32 unless autocast is on).
        """
        maps, glob = feats
        lateral = feats_lat is not None
        if lateral and self.views != 2:
            raise ValueError("this model reads one view; a lateral needs views=2")
        if lateral and P_lat is None:
            raise ValueError("a lateral encoding needs its projection matrix P_lat")
        with torch.autocast(points.device.type, enabled=False):
            pts, P32, iso32 = points.float(), P.float(), iso.float()
            scale = torch.as_tensor(box_scale, dtype=torch.float32, device=pts.device).reshape(-1, 1, 1)
            c, inview, depth = self._sample(maps, P32, pts)
            _, depth_iso = project_points(P32, iso32[:, None])  # (B, 1)
            unit = (pts - iso32[:, None]) / scale
            dnorm = ((depth - depth_iso) / scale.squeeze(-1)).unsqueeze(-1)
            pe = torch.cat([fourier_features(torch.cat([unit, dnorm], -1), self.pos_freqs), inview], -1)
            if lateral:
                has = (torch.ones(pts.shape[0], device=pts.device) if has_lat is None
                       else has_lat.float().reshape(-1))
                c_lat, inview_lat, _ = self._sample(feats_lat[0], P_lat.float(), pts)
                if self.fusion == "attn":
                    c = self._attend(c, inview, c_lat, inview_lat, has)
                elif self.fusion != "concat":
                    c = self._fuse(c, c_lat, has)
        c = c.transpose(1, 2).contiguous()  # (B, N, C): levels, then hires
        # the per-block feature projections as ONE matrix product (same weights, ~2x faster on CPU)
        w = torch.cat([fc.weight for fc in self.fc_c])
        bias = torch.cat([fc.bias for fc in self.fc_c])
        cs = F.linear(c, w.to(c.dtype), bias.to(c.dtype)).split(self.fc_p.out_features, -1)
        net = self.fc_p(pe)
        if lateral and self.fusion == "concat":
            h = has.reshape(-1, 1, 1)
            cl = F.linear(c_lat.transpose(1, 2).contiguous(), self.fc_clat.weight.to(c.dtype),
                          self.fc_clat.bias.to(c.dtype)).split(self.fc_p.out_features, -1)
            cs = [a + h.to(b.dtype) * b for a, b in zip(cs, cl)]
            glob = glob + h[:, 0] * self.fc_glat(feats_lat[1])
        elif lateral:
            glob = self._fuse(glob, feats_lat[1], has)
            lat = self.fc_lat(inview_lat)
            net = net + has.reshape(-1, 1, 1).to(lat.dtype) * lat  # bf16 stays bf16: + 0 is exact
        for c_k, fc_g, block in zip(cs, self.fc_g, self.blocks):
            net = net + c_k + fc_g(glob).unsqueeze(1)
            net = block(net)
        return self.fc_out(F.relu(net))

    def forward(self, image, P, iso, box_scale, points, image_lat=None, P_lat=None, has_lat=None):
        """image (B,1,H,W), P (B,3,4), iso (B,3), box_scale (B,) or float, points (B,N,3) -> (B,N,C) logits.
        image_lat (B,1,H',W'), P_lat (B,3,4), has_lat (B,) float: the lateral film (views == 2 only;
        see :meth:`decode`). Each film is encoded on its own: PA alone is exactly the one-view path."""
        feats_lat = self.encode(image_lat) if image_lat is not None else None
        return self.decode(self.encode(image), P, iso, points, box_scale, feats_lat, P_lat, has_lat)


GROWABLE = ("n_blocks", "hires", "views")  # what grow_from may add; every other architecture key must match


def grow_from(model: X2BNet, src: X2BNet) -> dict:
    """Load ``src``'s weights into ``model``, which may have more decoder blocks, a
    full-resolution branch that ``src`` lacks, or a second view, such that ``model`` computes
    exactly what ``src`` computes (function-preserving growth, as in Net2Net; for a second
    view: on the PA film alone, has_lat = 0): the extra blocks start as identities (their
    feature, global-code and output projections zeroed), the branch's columns of the feature
    projections start at zero, the lateral's input ``fc_lat`` keeps its fresh initialisation
    (it is multiplied by has_lat), concat fusion's lateral projections ``fc_clat``/``fc_glat`` start
    at zero (the pair starts as PA alone plus ``fc_lat``), attention's scorer ``att`` starts with its
    last layer at zero (equal weights: mean fusion); all of it then learns. Two-view weights may
    also change their fusion (mean <-> max <-> concat <-> attn): PA alone stays exact (one view fused is
    that view), the pair starts from the other fusion of the same features.
    Returns {key: (src value, model value)} of what grew or changed. ValueError naming the keys when
    the architectures differ otherwise, ``model`` has fewer blocks or views, or another branch width."""
    a, b = src.config, model.config
    refused = sorted(k for k in set(a) | set(b) if k not in GROWABLE + ("fusion",) and a.get(k) != b.get(k))
    if b["n_blocks"] < a["n_blocks"]:
        refused.append("n_blocks")
    if a.get("hires", 0) not in (0, b.get("hires", 0)):  # a branch can be added, not resized
        refused.append("hires")
    if a.get("views", 1) > b.get("views", 1):
        refused.append("views")
    if refused:
        raise ValueError("cannot grow: " + ", ".join(f"{k} {a.get(k)} -> {b.get(k)}" for k in refused))
    old = src.state_dict()
    new = model.state_dict()
    c_old = old["fc_c.0.weight"].shape[1]
    with torch.no_grad():
        for k, v in new.items():
            if k in old and old[k].shape == v.shape:
                v.copy_(old[k])
            elif k in old and k.startswith("fc_c.") and k.endswith(".weight"):  # hires columns appended
                v.zero_()
                v[:, :c_old] = old[k]
            elif k.startswith(("fc_c.", "fc_g.", "blocks.")) and ".fc_0." not in k:  # a new block
                v.zero_()
            elif k.startswith(("fc_clat.", "fc_glat.", "att.2.")):  # concat's lateral projections: off at
                v.zero_()  # first; attention's last layer: equal weights
            elif k.startswith("att."):  # the scorer's first layer keeps its fresh initialisation
                pass
            elif not k.startswith(("hires.", "blocks.", "fc_lat.")):
                raise ValueError(f"cannot grow: no source for {k}")
    default = {"views": 1}
    grown = {k: (a.get(k, default.get(k, 0)), b.get(k, default.get(k, 0))) for k in GROWABLE
             if a.get(k, default.get(k, 0)) != b.get(k, default.get(k, 0))}
    if a.get("views", 1) == b.get("views", 1) == 2 and a.get("fusion") != b.get("fusion"):
        grown["fusion"] = (a.get("fusion"), b.get("fusion"))
    return grown


def x2b_atto(**kw) -> X2BNet:
    """X2B with ConvNeXt-atto (3.4 M encoder parameters)."""
    return X2BNet("convnext_atto", **kw)


def x2b_femto(**kw) -> X2BNet:
    """X2B with ConvNeXt-femto (4.8 M encoder parameters)."""
    return X2BNet("convnext_femto", **kw)


def x2b_pico(**kw) -> X2BNet:
    """X2B with ConvNeXt-pico (8.5 M encoder parameters)."""
    return X2BNet("convnext_pico", **kw)


def bone_logit(logits: torch.Tensor) -> torch.Tensor:
    """(..., C) class logits -> (...,) logit of "any bone": log sum_k>0 p_k - log p_0."""
    return torch.logsumexp(logits[..., 1:], -1) - logits[..., 0]


def geometry_tensors(geometry, device=None):
    """ProjectionGeometry -> (P (1,3,4), iso (1,3), box_scale (1,)) float32 tensors."""
    P = torch.as_tensor(np.asarray(geometry.projection_matrix(), np.float32))[None]
    iso = torch.as_tensor(np.asarray(geometry.isocenter_lps_mm, np.float32))[None]
    scale = torch.tensor([float(max(geometry.box_size_mm))], dtype=torch.float32)
    return P.to(device), iso.to(device), scale.to(device)


def _film_tensor(image, geometry, device, what="image"):
    """(H, W) film -> (1, 1, H, W) float32 tensor; ValueError when its size is not geometry.size_px."""
    img = torch.as_tensor(np.asarray(image, np.float32))[None, None].to(device)
    if tuple(img.shape[-1:-3:-1]) != tuple(geometry.size_px):
        raise ValueError(f"{what} is {img.shape[-1]}x{img.shape[-2]} px but the geometry says {geometry.size_px}")
    return img


def make_decode_fn(model: X2BNet, image, geometry, device=None, amp_dtype=None, lateral=None,
                   lateral_geometry=None):
    """Encode the film(s) once; return ``decode_fn(points (M,3) LPS mm ndarray) -> (p_bone (M,), label (M,))``.

    image: (H, W) array in [0, 1] (network-normalised film, size == geometry.size_px).
    lateral, lateral_geometry: the lateral film of the same study in network form (size ==
    lateral_geometry.size_px) and its camera; only for a model with views == 2 (InputError
    otherwise). None = the PA film alone.
    p_bone: float32 probability of any bone = 1 - p(background); label: uint8
    argmax bone label (1..C-1, defined for every point). Used by MISE.
    amp_dtype: torch.bfloat16 / torch.float16 for autocast on CUDA, None = off.
    """
    from ..errors import InputError

    if lateral is not None and getattr(model, "views", 1) != 2:
        raise InputError("these weights read one film; a lateral film needs two-view weights (views = 2)")
    if (lateral is None) != (lateral_geometry is None):
        raise ValueError("a lateral film and its geometry go together")
    device = torch.device(device or next(model.parameters()).device)
    img = _film_tensor(image, geometry, device)
    P, iso, scale = geometry_tensors(geometry, device)
    img_lat = P_lat = None
    if lateral is not None:
        img_lat = _film_tensor(lateral, lateral_geometry, device, "the lateral image")
        P_lat = geometry_tensors(lateral_geometry, device)[0]
    use_amp = amp_dtype is not None and device.type == "cuda"
    model.eval()
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
        feats = model.encode(img)
        feats_lat = model.encode(img_lat) if img_lat is not None else None

    def decode_fn(points):
        pts = torch.as_tensor(np.asarray(points, np.float32), device=device)[None]
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            logits = model.decode(feats, P, iso, pts, scale, feats_lat, P_lat)[0].float()
        p_bone = torch.sigmoid(bone_logit(logits))
        label = logits[:, 1:].argmax(-1) + 1
        return p_bone.cpu().numpy(), label.to(torch.uint8).cpu().numpy()

    return decode_fn
