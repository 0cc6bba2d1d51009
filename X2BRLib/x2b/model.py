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
    ``self.config`` holds these kwargs (the weights record stores them).
    """

    def __init__(self, encoder: str = "convnext_atto", num_classes: int = NUM_CLASSES,
                 hidden: int = 128, n_blocks: int = 4, feat_dim: int = 64, pos_freqs: int = 6,
                 hires: int = 0):
        super().__init__()
        encoder = encoder_name(encoder)
        self.config = dict(encoder=encoder, num_classes=int(num_classes), hidden=int(hidden),
                           n_blocks=int(n_blocks), feat_dim=int(feat_dim), pos_freqs=int(pos_freqs))
        if hires:  # recorded only when used: records of older weights stay valid as they are
            self.config["hires"] = int(hires)
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
    def decode(self, feats, P: torch.Tensor, iso: torch.Tensor, points: torch.Tensor,
               box_scale=384.0) -> torch.Tensor:
        """Classify query points from an encoding.

        feats: (list of maps, global code) as returned by :meth:`encode`.
        P (B, 3, 4); iso (B, 3); points (B, N, 3) LPS mm; box_scale (B,) or float mm.
        Returns logits (B, N, num_classes) (float32 unless autocast is on).
        """
        maps, glob = feats
        b, _, fh, fw = maps[0].shape
        size_px = (fw * self.strides[0], fh * self.strides[0])  # the film's (W, H)
        with torch.autocast(points.device.type, enabled=False):
            pts, P32, iso32 = points.float(), P.float(), iso.float()
            scale = torch.as_tensor(box_scale, dtype=torch.float32, device=pts.device).reshape(-1, 1, 1)
            uv, depth = project_points(P32, pts)  # (B, N, 2) px, (B, N) mm
            _, depth_iso = project_points(P32, iso32[:, None])  # (B, 1)
            grid = uv_to_grid_sample(uv, size_px)
            grid = torch.nan_to_num(grid, nan=2.0, posinf=2.0, neginf=-2.0).clamp(-2.0, 2.0)
            inview = (grid.abs() <= 1).all(-1, keepdim=True).float()
            unit = (pts - iso32[:, None]) / scale
            dnorm = ((depth - depth_iso) / scale.squeeze(-1)).unsqueeze(-1)
            pe = torch.cat([fourier_features(torch.cat([unit, dnorm], -1), self.pos_freqs), inview], -1)
            # sampled in float32: a bf16 grid would be off by up to half a pixel
            sampled = [F.grid_sample(m.float(), grid.unsqueeze(2), mode="bilinear",
                                     padding_mode="zeros", align_corners=False).squeeze(-1)
                       for m in maps]  # each (B, C, N)
        c = torch.cat(sampled, 1).transpose(1, 2).contiguous()  # (B, N, C): levels, then hires
        # the per-block feature projections as ONE matrix product (same weights, ~2x faster on CPU)
        w = torch.cat([fc.weight for fc in self.fc_c])
        bias = torch.cat([fc.bias for fc in self.fc_c])
        cs = F.linear(c, w.to(c.dtype), bias.to(c.dtype)).split(self.fc_p.out_features, -1)
        net = self.fc_p(pe)
        for c_k, fc_g, block in zip(cs, self.fc_g, self.blocks):
            net = net + c_k + fc_g(glob).unsqueeze(1)
            net = block(net)
        return self.fc_out(F.relu(net))

    def forward(self, image, P, iso, box_scale, points):
        """image (B,1,H,W), P (B,3,4), iso (B,3), box_scale (B,) or float, points (B,N,3) -> (B,N,C) logits."""
        return self.decode(self.encode(image), P, iso, points, box_scale)


GROWABLE = ("n_blocks", "hires")  # what grow_from may add; every other architecture key must match


def grow_from(model: X2BNet, src: X2BNet) -> dict:
    """Load ``src``'s weights into ``model``, which may have more decoder blocks and a
    full-resolution branch that ``src`` lacks, such that ``model`` computes exactly what
    ``src`` computes (function-preserving growth, as in Net2Net): the extra blocks start as
    identities (their feature, global-code and output projections zeroed), the branch's
    columns of the feature projections start at zero; all of it then learns.
    Returns {key: (src value, model value)} of what grew. ValueError naming the keys when
    the architectures differ otherwise, ``model`` has fewer blocks, or another branch width."""
    a, b = src.config, model.config
    refused = sorted(k for k in set(a) | set(b) if k not in GROWABLE and a.get(k) != b.get(k))
    if b["n_blocks"] < a["n_blocks"]:
        refused.append("n_blocks")
    if a.get("hires", 0) not in (0, b.get("hires", 0)):  # a branch can be added, not resized
        refused.append("hires")
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
            elif not k.startswith(("hires.", "blocks.")):
                raise ValueError(f"cannot grow: no source for {k}")
    return {k: (a.get(k, 0), b.get(k, 0)) for k in GROWABLE if a.get(k, 0) != b.get(k, 0)}


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


def make_decode_fn(model: X2BNet, image, geometry, device=None, amp_dtype=None):
    """Encode one film once; return ``decode_fn(points (M,3) LPS mm ndarray) -> (p_bone (M,), label (M,))``.

    image: (H, W) array in [0, 1] (network-normalised film, size == geometry.size_px).
    p_bone: float32 probability of any bone = 1 - p(background); label: uint8
    argmax bone label (1..C-1, defined for every point). Used by MISE.
    amp_dtype: torch.bfloat16 / torch.float16 for autocast on CUDA, None = off.
    """
    device = torch.device(device or next(model.parameters()).device)
    img = torch.as_tensor(np.asarray(image, np.float32))[None, None].to(device)
    if tuple(img.shape[-1:-3:-1]) != tuple(geometry.size_px):
        raise ValueError(f"image is {img.shape[-1]}x{img.shape[-2]} px but the geometry says {geometry.size_px}")
    P, iso, scale = geometry_tensors(geometry, device)
    use_amp = amp_dtype is not None and device.type == "cuda"
    model.eval()
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
        feats = model.encode(img)

    def decode_fn(points):
        pts = torch.as_tensor(np.asarray(points, np.float32), device=device)[None]
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            logits = model.decode(feats, P, iso, pts, scale)[0].float()
        p_bone = torch.sigmoid(bone_logit(logits))
        label = logits[:, 1:].argmax(-1) + 1
        return p_bone.cpu().numpy(), label.to(torch.uint8).cpu().numpy()

    return decode_fn
