"""Film check (X2BRLib.filmcheck) on what users give: chest films and things that are not.

Inputs, each read as a user's file would be and put through ``filmcheck.check_and_scale``
with the shipped detector (no ``--force``):

* not chest films, made here: uniform and Gaussian noise, smoothed noise, a 300 x 5,000 px
  noise strip and the sample film stretched to 300 x 5,000, four photographs bundled with
  scikit-image (camera, astronaut, coins, moon), an axial and a coronal slice of the bundled
  sample CT saved as 8-bit PNG (and of every ``--ct-dir`` CT);
* the bundled simulated sample film;
* ``--films DIR``: every file of a gallery of real films; its kind is read from the name
  (``*_lat.*`` lateral, else frontal). Frontal films must never be refused.

    .venv/bin/python bench/bench_filmcheck.py [--films ../shared/data/films] [--ct-dir ../shared/data/ct] [--weights DIR]
    .venv/bin/python bench/bench_filmcheck.py --held-out [--ct-dir ../shared/data/ct]
    .venv/bin/python bench/bench_filmcheck.py --held-out-2 --ct-dir ../shared/data/ct

``--held-out``: instead, non-films that played no part in setting the film check's rules (its
thresholds were read off the images above): the other images bundled with scikit-image (photographs,
micrographs, text, textures, a phantom; colour ones saved as colour PNGs) and other slices of the same
CTs (sagittal, coronal in front of and behind the middle, axial above and below it). A colour
image the film check passes but the reader warns about ("colour image ...") counts as warned; an
image read as its negative (``X2BRLib.polarity``, always with a warning) is marked so.

``--held-out-2``: non-films that were not looked at before the film-likeness probe
(``X2BRLib/film_likeness.py``) was fixed: ``make_held_out_2``.

For each image: verdict (refused / warned / ok), aspect, neighbour correlation, bones found
at confidence >= 0.1 and >= 0.25, the layout residual and the ribs' side separation
(``filmcheck.layout_checks``; empty when refused or not measurable), the film likeness
(``film_likeness``: P(radiograph) of the probe; warned below its threshold, 0.5), the pixel spacing used
(source), the rib-cage width it implies (at the isocentre) and the image's longer side in mm
(a 35 or 43 cm detector, usually).
"""
from __future__ import annotations

import argparse
import glob
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def png_saver(folder: Path, out: list):
    """save(name, array) -> folder/name.png (8 bit), (name, path) appended to ``out``."""
    from PIL import Image

    def save(name, arr):
        p = folder / f"{name}.png"
        Image.fromarray(np.asarray(arr).astype(np.uint8)).save(p)
        out.append((name, p))
    return save


def ct_volumes(ct_paths):
    """(tag, HU volume (z, y, x)) of each CT file; tag: its folder for */ct.nii.gz, else its name."""
    import SimpleITK as sitk

    for ct in ct_paths:
        tag = Path(ct).parent.name if Path(ct).name == "ct.nii.gz" else Path(ct).name.split(".")[0]
        yield tag, sitk.GetArrayFromImage(sitk.ReadImage(str(ct)))


def window(hu):
    """A CT slice as 8-bit grey, [-1000, 1000] HU."""
    return np.clip((hu + 1000) / 2000, 0, 1) * 255


def make_non_chest(folder: Path, ct_paths) -> list[tuple[str, Path]]:
    """Write the not-a-chest-film images into ``folder``: [(name, path)]."""
    from PIL import Image
    from scipy import ndimage
    from skimage import data

    from X2BRLib.io.radiograph import read_radiograph

    rng = np.random.default_rng(0)
    out = []
    save = png_saver(folder, out)

    save("noise_uniform", rng.uniform(0, 255, (1024, 1024)))
    save("noise_gaussian", np.clip(rng.normal(128, 40, (1024, 1024)), 0, 255))
    sm = ndimage.gaussian_filter(rng.normal(0, 1, (1024, 1024)), 8)
    save("noise_smoothed", (sm - sm.min()) / np.ptp(sm) * 255)
    save("strip_noise_300x5000", rng.uniform(0, 255, (5000, 300)))
    film = read_radiograph(REPO / "Resources" / "SampleData" / "sample_radiograph.dcm").image
    save("strip_sample_film_300x5000", np.asarray(Image.fromarray(np.uint8(film * 255)).resize((300, 5000))))
    for name in ("camera", "astronaut", "coins", "moon"):
        save(f"photo_{name}", getattr(data, name)())
    for tag, vol in ct_volumes(ct_paths):
        save(f"ct_axial_{tag}", window(vol[vol.shape[0] // 2]))
        if vol.shape[0] >= 64:
            save(f"ct_coronal_{tag}", window(vol[:, vol.shape[1] // 2, :][::-1]))
    return out


HELD_OUT_PICTURES = ("chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                     "text", "page", "horse", "clock", "grass", "gravel", "brick", "checkerboard", "cell",
                     "binary_blobs", "logo", "microaneurysms", "shepp_logan_phantom", "colorwheel")


def make_held_out(folder: Path, ct_paths) -> list[tuple[str, Path]]:
    """Write the held-out not-a-chest-film images into ``folder``: [(name, path)]."""
    from skimage import data

    out = []
    save = png_saver(folder, out)
    for name in HELD_OUT_PICTURES:
        img = getattr(data, name)(**({"rng": 0} if name == "binary_blobs" else {}))  # the one random picture
        save(f"photo_{name}", img * 255 if img.dtype == bool or img.max() <= 1 else img)
    for tag, vol in ct_volumes(ct_paths):
        nz, ny, nx = vol.shape
        save(f"ct_sagittal_{tag}", window(vol[::-1, :, nx // 2]))
        for f, where in ((1 / 3, "front"), (2 / 3, "back")):
            if nz >= 64:
                save(f"ct_coronal_{where}_{tag}", window(vol[::-1, int(ny * f), :]))
        for f, where in ((0.25, "low"), (0.75, "high")):
            save(f"ct_axial_{where}_{tag}", window(vol[int(nz * f)]))
    return out


PACKAGE_PICTURES = (("skimage", "data/motorcycle_left.png"), ("skimage", "data/color.png"),
                    ("skimage", "data/chessboard_GRAY.png"), ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
                    ("matplotlib", "mpl-data/sample_data/Minduka_Present_Blue_Pack.png"),
                    ("matplotlib", "mpl-data/sample_data/logo2.png"))
CT_WINDOWS = {"lung": (-600, 1500), "mediastinum": (40, 400), "bone": (400, 1800)}


def make_held_out_2(folder: Path, ct_paths) -> list[tuple[str, Path]]:
    """Non-films not looked at before the film-likeness probe was fixed (``--held-out-2``): pictures
    shipped inside installed packages (scikit-image, matplotlib: a photograph of a person, drawings),
    matplotlib's MR slice of a head, and slices of the ``--ct-dir`` CTs at 40 % and 60 % of each axis
    in lung, mediastinum and bone windows (the probe saw slices of the sample CT only)."""
    import gzip
    import importlib
    import shutil

    import matplotlib

    out = []
    save = png_saver(folder, out)
    for pkg, rel in PACKAGE_PICTURES:
        src = Path(importlib.import_module(pkg).__file__).parent / rel
        dst = folder / f"pkg_{Path(rel).name}"
        shutil.copyfile(src, dst)
        out.append((dst.stem, dst))
    with gzip.open(Path(matplotlib.__file__).parent / "mpl-data/sample_data/s1045.ima.gz") as f:
        mr = np.frombuffer(f.read(), np.uint16).reshape(256, 256).astype(float)
    save("mr_head_s1045", mr / mr.max() * 255)
    for tag, vol in ct_volumes([p for p in ct_paths if Path(p).name == "ct.nii.gz"]):
        nz, ny, nx = vol.shape
        for f in (0.4, 0.6):
            slices = {"axial": vol[int(nz * f)], "coronal": vol[::-1, int(ny * f), :],
                      "sagittal": vol[::-1, :, int(nx * f)]}
            for axis, sl in slices.items():
                for wname, (c, w) in CT_WINDOWS.items():
                    save(f"ct_{axis}_{int(f * 100)}_{wname}_{tag}", np.clip((sl - (c - w / 2)) / w, 0, 1) * 255)
    return out


def main(argv=None) -> int:
    from X2BRLib.detect.detector import Detector
    from X2BRLib.errors import InputError
    from X2BRLib.filmcheck import NotAChestFilmError, check_and_scale
    from X2BRLib.io.radiograph import read_radiograph

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--films", help="a folder of real chest films (the gallery)")
    ap.add_argument("--ct-dir", help="a folder of */ct.nii.gz chest CTs: their slices as not-films")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--weights", help="detector weights folder (default: the shipped detector)")
    ap.add_argument("--held-out", action="store_true", help="only the held-out non-films (module doc)")
    ap.add_argument("--held-out-2", action="store_true",
                    help="only the non-films held out from the film-likeness probe (make_held_out_2)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    det = Detector(args.weights, device=args.device)
    cts = [REPO / "Resources" / "SampleData" / "chest_ct_3mm.nii.gz"]
    if args.ct_dir:
        cts += sorted(Path(p) for p in glob.glob(str(Path(args.ct_dir) / "*" / "ct.nii.gz")))
    counts = {}
    print("| image | kind | verdict | aspect | neighbour corr. | bones >= 0.1 | bones >= 0.25 | layout mm | rib sides | film likeness | spacing mm (source) | rib cage mm | field mm |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        if args.held_out_2:
            items = [(n, p, "not a chest film (held out 2)") for n, p in make_held_out_2(Path(tmp), cts)]
        elif args.held_out:
            items = [(n, p, "not a chest film (held out)") for n, p in make_held_out(Path(tmp), cts)]
        else:
            items = [(n, p, "not a chest film") for n, p in make_non_chest(Path(tmp), cts)]
            items.append(("sample_radiograph.dcm", REPO / "Resources" / "SampleData" / "sample_radiograph.dcm",
                          "simulated frontal"))
        if args.films and not (args.held_out or args.held_out_2):
            for p in sorted(Path(args.films).iterdir()):
                if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".dcm"):
                    items.append((p.name, p, "lateral" if "_lat." in p.name else "frontal"))
        for name, path, kind in items:
            try:
                rad = read_radiograph(path, default_spacing_mm=None)
            except InputError as e:
                verdict, cells = "refused by the reader", [str(e).split(": ")[-1]] + [""] * 9
            else:
                try:
                    out, _ = check_and_scale(rad, det)
                except NotAChestFilmError as e:
                    forced, _ = check_and_scale(rad, det, force=True)
                    fc, sc, verdict = forced.meta["film_check"], None, "refused"
                else:
                    fc, sc = out.meta["film_check"], out.meta["scale"]
                    verdict = "warned" if fc["warnings"] else "ok"
                    if verdict == "ok" and any("colour image" in w for w in rad.warnings):
                        verdict = "warned by the reader (colour)"  # the user sees that line too
                    if (out.meta.get("polarity") or {}).get("read_as") == "negative":
                        verdict = ("warned" if verdict == "ok" else verdict) + " (read as its negative: a warning)"
                cells = [f"{fc['aspect']:.2f}", f"{fc['neighbour_correlation']:.3f}", str(fc["bones_conf_0.1"]),
                         str(fc["bones_conf_0.25"]),
                         "" if fc.get("layout_residual_mm") is None else f"{fc['layout_residual_mm']:.1f}",
                         "" if fc.get("rib_side_separation") is None else f"{fc['rib_side_separation']:.3f}",
                         "" if fc.get("film_likeness") is None else f"{fc['film_likeness']:.3f}",
                         "" if sc is None else f"{sc['spacing_mm'][0]:.4g} ({sc['source']})",
                         "" if sc is None or sc["chest_width_mm"] is None else f"{sc['chest_width_mm']:.0f}",
                         "" if sc is None else f"{sc['field_mm']:.0f}"]
            counts.setdefault(kind, {}).setdefault(verdict.split(" ")[0], 0)
            counts[kind][verdict.split(" ")[0]] += 1
            print(f"| {name} | {kind} | {verdict} | " + " | ".join(cells) + " |", flush=True)
    print()
    for kind, c in counts.items():
        print(f"{kind}: " + ", ".join(f"{v} {k}" for k, v in sorted(c.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
