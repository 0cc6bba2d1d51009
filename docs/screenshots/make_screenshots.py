"""Screenshots for docs/SLICER.md, rendered headless from a REAL run of the module's path.

    .venv/bin/python docs/screenshots/make_screenshots.py [--quality default] [--device cpu]

1. The bundled sample radiograph (DICOM DX) is loaded into a real MRML scene (slicer-core
   wheel) the way Slicer loads a file (volumes logic) and checked as the module checks it.
2. ``x2br reconstruct`` runs out of process exactly as the module runs it
   (X2BRLib.slicer_process: same command line, same output parsing).
3. The film is placed and ``bones.seg.nrrd`` loaded with X2BRLib.scene (closed surfaces made).
4. Images written next to this script:
   - x2br_panel.png: the module panel: Resources/UI/X2BR.ui rendered by Qt (PySide6, offscreen)
     with plain Qt stand-ins for Slicer's widgets, filled with this run's values;
   - x2br_overlay.png: left, the film with every bone projected from the X-ray source onto it
     (segment colours); right, the coronal plane through the film as Slicer's Green view
     shows it: film plus the segments' cross-sections;
   - x2br_3d.png: the segmentation's closed surfaces rendered by VTK offscreen (EGL), from the
     front and, with the placed film, from the patient's left.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from X2BRLib import scene, slicer_process  # noqa: E402
from X2BRLib.cli import SAMPLE_DIR  # noqa: E402

BACKGROUND_TOP, BACKGROUND_BOTTOM = (0.7568, 0.7647, 0.9098), (1.0, 1.0, 1.0)  # Slicer's 3D view gradient


def run_module_path(quality: str, device: str, work: Path):
    """Steps 1-3; returns (scene, film node, segmentation node, seconds, input volume node)."""
    mrml, logics = scene.headless_scene()
    film_file = SAMPLE_DIR / "sample_radiograph.dcm"
    volume = logics["Volumes"].AddArchetypeVolume(str(film_file), "sample_radiograph")
    scene.check_radiograph_volume(volume)
    source = scene.source_file(volume) or scene.write_volume_file(volume, work / "radiograph.nrrd")
    out = work / "out"
    cmd = slicer_process.reconstruct_command(sys.executable, source, out, device, quality)
    job = slicer_process.ReconstructionProcess(cmd, env=slicer_process.subprocess_environment()).start()
    t0 = time.perf_counter()
    if job.wait(timeout=1800, callback=lambda ev: [print(f"  [{e.kind}] {e.message}") for e in ev]) != 0:
        raise SystemExit(job.failure_message())
    seconds = time.perf_counter() - t0
    film = scene.add_radiograph_volume(mrml, source, "sample_radiograph (X2BR film)")
    seg = scene.load_segmentation(mrml, out / "bones.seg.nrrd", name="sample_radiograph bones", source_volume=film)
    return mrml, film, seg, seconds, volume, job.result()


def _segments(seg):
    s = seg.GetSegmentation()
    return [(s.GetNthSegmentID(i), s.GetSegment(s.GetNthSegmentID(i))) for i in range(s.GetNumberOfSegments())]


def _film_geometry(film):
    from X2BRLib.geometry import ProjectionGeometry

    return ProjectionGeometry.from_json(film.GetAttribute("X2BR.geometry"))


def _ras_to_film_px(points_ras, film):
    """Project RAS points from the X-ray source onto the placed film: (N, 2) pixel (column, row)."""
    g = _film_geometry(film)
    source = scene.LPS_TO_RAS[:3, :3] @ g.source
    point, normal = scene.film_plane_ras(film)
    d = points_ras - source
    hit = source + (((point - source) @ normal) / (d @ normal))[:, None] * d
    ijk = np.c_[hit, np.ones(len(hit))] @ np.linalg.inv(scene.volume_ijk_to_ras(film)).T
    return ijk[:, :2]


def render_overlay(film, seg, path: Path, title: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image, ImageDraw
    from vtkmodules.util import numpy_support

    image = scene.film_array(film)
    h, w = image.shape
    ss = 4  # supersampling of the projected silhouettes
    projected = np.zeros((h, w, 4), np.float32)
    cut = np.zeros((h, w, 4), np.float32)
    m = scene.volume_ijk_to_ras(film)
    jj, ii = np.mgrid[0:h, 0:w]
    film_ras = (np.stack([ii.ravel(), jj.ravel(), np.zeros(ii.size), np.ones(ii.size)], 1) @ m.T)[:, :3]
    for segment_id, segment in _segments(seg):
        colour = np.array(segment.GetColor(), np.float32)
        poly = scene.closed_surface(seg, segment_id)
        pts = numpy_support.vtk_to_numpy(poly.GetPoints().GetData()).astype(float)
        cells = poly.GetPolys()
        offsets = numpy_support.vtk_to_numpy(cells.GetOffsetsArray())
        assert np.all(np.diff(offsets) == 3), "closed surfaces are triangle meshes"
        tris = numpy_support.vtk_to_numpy(cells.GetConnectivityArray()).reshape(-1, 3)
        uv = (_ras_to_film_px(pts, film) + 0.5) * ss
        mask = Image.new("L", (w * ss, h * ss), 0)
        draw = ImageDraw.Draw(mask)
        for t in uv[tris]:
            draw.polygon([tuple(p) for p in t], fill=255)
        a = np.asarray(mask.resize((w, h), Image.BILINEAR), np.float32)[..., None] / 255.0 * 0.55
        projected[..., :3] = projected[..., :3] * (1 - a) + colour * a
        projected[..., 3:] = np.maximum(projected[..., 3:], a)
        # cross-section of the segment's labelmap with the film plane (nearest voxel)
        labelmap = segment.GetRepresentation("Binary labelmap")
        import vtk

        mm = vtk.vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(mm)
        world_to_ijk = np.linalg.inv(scene._numpy_matrix(mm))
        ijk = np.rint(np.c_[film_ras, np.ones(len(film_ras))] @ world_to_ijk.T)[:, :3].astype(int)
        ext = labelmap.GetExtent()
        dims = labelmap.GetDimensions()
        values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[::-1])
        rel = ijk - [ext[0], ext[2], ext[4]]
        ok = np.all((rel >= 0) & (rel < dims), axis=1)
        hit = np.zeros(len(rel), bool)
        hit[ok] = values[rel[ok, 2], rel[ok, 1], rel[ok, 0]] == segment.GetLabelValue()
        hit = hit.reshape(h, w)
        cut[hit, :3] = colour
        cut[hit, 3] = 0.6
    # straight composite over the grey film (projected colours use their own alpha)
    fig = Figure(figsize=(9.6, 5.0), dpi=100)
    FigureCanvasAgg(fig)
    for k, (overlay, label) in enumerate(((projected, "film + bones projected from the X-ray source"),
                                         (cut, "coronal view through the film plane (Green view)"))):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        rgba = overlay.copy()
        if k == 0:
            rgba[..., :3] = np.where(rgba[..., 3:] > 0, rgba[..., :3] / np.maximum(rgba[..., 3:], 1e-6), 0)
            rgba[..., :3] = np.clip(rgba[..., :3], 0, 1)
        ax.imshow(rgba)
        ax.set_title(label, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(2, h - 4, "R", color="w", fontsize=9)  # the patient's right is on the viewer's left
        ax.text(w - 10, h - 4, "L", color="w", fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, format="png")


def render_3d(film, seg, path: Path, size=(480, 480)):
    import vtk
    from vtkmodules.util import numpy_support

    def actors(with_film: bool):
        out = []
        for segment_id, segment in _segments(seg):
            normals = vtk.vtkPolyDataNormals()
            normals.SetInputData(scene.closed_surface(seg, segment_id))
            mapper = vtk.vtkPolyDataMapper()
            mapper.SetInputConnection(normals.GetOutputPort())
            actor = vtk.vtkActor()
            actor.SetMapper(mapper)
            actor.GetProperty().SetColor(*segment.GetColor())
            actor.GetProperty().SetSpecular(0.2)
            out.append(actor)
        if with_film:
            image = scene.film_array(film)
            h, w = image.shape
            tex_image = vtk.vtkImageData()
            tex_image.SetDimensions(w, h, 1)
            arr = numpy_support.numpy_to_vtk(np.round(image.ravel() * 255).astype(np.uint8), deep=True)
            tex_image.GetPointData().SetScalars(arr)
            texture = vtk.vtkTexture()
            texture.SetInputData(tex_image)
            texture.InterpolateOn()
            m = scene.volume_ijk_to_ras(film)
            corner = lambda i, j: (m @ [i, j, 0, 1])[:3]  # noqa: E731
            plane = vtk.vtkPlaneSource()
            plane.SetOrigin(*corner(-0.5, -0.5))
            plane.SetPoint1(*corner(w - 0.5, -0.5))
            plane.SetPoint2(*corner(-0.5, h - 0.5))
            mapper = vtk.vtkPolyDataMapper()
            mapper.SetInputConnection(plane.GetOutputPort())
            actor = vtk.vtkActor()
            actor.SetMapper(mapper)
            actor.SetTexture(texture)
            actor.GetProperty().SetOpacity(0.85)
            actor.GetProperty().LightingOff()
            out.append(actor)
        return out

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(size[0] * 2, size[1])
    window.SetMultiSamples(8)
    views = (((0.0, 0.0, 0.5, 1.0), False, (0.15, 1.0, 0.12), "front (anterior)"),
             ((0.5, 0.0, 1.0, 1.0), True, (-1.0, 0.55, 0.2), "from the left, with the film on its plane"))
    for viewport, with_film, direction, label in views:
        renderer = vtk.vtkRenderer()
        renderer.SetViewport(*viewport)
        renderer.GradientBackgroundOn()
        renderer.SetBackground(*BACKGROUND_BOTTOM)
        renderer.SetBackground2(*BACKGROUND_TOP)
        for actor in actors(with_film):
            renderer.AddActor(actor)
        text = vtk.vtkTextActor()
        text.SetInput(label)
        text.GetTextProperty().SetColor(0.1, 0.1, 0.2)
        text.GetTextProperty().SetFontSize(16)
        text.SetPosition(10, 10)
        renderer.AddViewProp(text)
        camera = renderer.GetActiveCamera()
        bounds = np.array(seg_bounds(seg)).reshape(3, 2)
        centre = bounds.mean(1)
        camera.SetFocalPoint(*centre)
        camera.SetPosition(*(centre + 1500 * np.asarray(direction) / np.linalg.norm(direction)))
        camera.SetViewUp(0, 0, 1)
        camera.SetViewAngle(18)
        renderer.ResetCameraClippingRange()
        window.AddRenderer(renderer)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.Update()
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()
    print(f"  3D: {type(window).__name__} ({window.ReportCapabilities().splitlines()[1] if window.ReportCapabilities() else '?'})")


def shrink_png(path: Path, colours: int = 256) -> None:
    """Re-save a PNG with an adaptive palette (screenshots stay small in the repository)."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=colours, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.FLOYDSTEINBERG)
    small.save(path, optimize=True)


def seg_bounds(seg):
    b = [0.0] * 6
    seg.GetRASBounds(b)
    return b


def render_panel(path: Path, volume_name: str, segmentation_name: str, quality: str, device: str, status: str):
    """Resources/UI/X2BR.ui through Qt's own loader; Slicer's widgets replaced by their Qt bases
    (qMRMLWidget -> QWidget, ctkCollapsibleButton -> QGroupBox, qMRMLNodeComboBox -> QComboBox)."""
    import re

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtCore, QtUiTools, QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    text = (REPO / "Resources" / "UI" / "X2BR.ui").read_text()
    titles = dict(re.findall(r'<widget class="ctkCollapsibleButton" name="(\w+)">\s*<property name="text">\s*'
                             r"<string>([^<]*)</string>", text))
    for a, b in (("qMRMLWidget", "QWidget"), ("ctkCollapsibleButton", "QGroupBox"), ("qMRMLNodeComboBox", "QComboBox")):
        text = text.replace(f'class="{a}"', f'class="{b}"')
    text = re.sub(r"<customwidgets>.*</customwidgets>|<connections>.*</connections>", "", text, flags=re.S)
    buf = QtCore.QBuffer()
    buf.setData(text.encode())
    buf.open(QtCore.QIODevice.ReadOnly)
    w = QtUiTools.QUiLoader().load(buf)
    find = lambda cls, name: w.findChild(cls, name)  # noqa: E731
    for name, title in titles.items():
        find(QtWidgets.QGroupBox, name).setTitle(title)
    for name, items, current in (("inputVolumeSelector", [volume_name], volume_name),
                                 ("qualityComboBox", list(slicer_process.QUALITIES), quality),
                                 ("deviceComboBox", list(slicer_process.DEVICES), device),
                                 ("outputSegmentationSelector", [segmentation_name], segmentation_name)):
        combo = find(QtWidgets.QComboBox, name)
        combo.addItems(items)
        combo.setCurrentText(current)
    find(QtWidgets.QPushButton, "applyButton").setEnabled(True)
    find(QtWidgets.QProgressBar, "progressBar").setValue(100)
    find(QtWidgets.QLabel, "statusLabel").setText(status)
    find(QtWidgets.QGroupBox, "detailsCollapsibleButton").setVisible(False)
    w.resize(380, 330)
    w.grab().save(str(path))
    del app


def main(argv=None) -> int:
    import tempfile

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quality", default="default", choices=slicer_process.QUALITIES)
    p.add_argument("--device", default="cpu")
    p.add_argument("-o", "--output", default=str(HERE))
    args = p.parse_args(argv)
    out = Path(args.output)
    with tempfile.TemporaryDirectory(prefix="x2br-shots-") as tmp:
        print("reconstructing the sample radiograph out of process...")
        mrml, film, seg, seconds, volume, summary = run_module_path(args.quality, args.device, Path(tmp))
        n = seg.GetSegmentation().GetNumberOfSegments()
        done = (summary or {}).get("reconstructed", [{}])[0]
        status = f"{done.get('bones_found', n)} bones reconstructed in {done.get('seconds', round(seconds, 1))} s."
        print(status)
        title = (f"X2BR sample radiograph: {n} bones, quality '{args.quality}' "
                 f"({ {'fast': 3, 'default': 2, 'high': 1}[args.quality]} mm voxels)")
        render_overlay(film, seg, out / "x2br_overlay.png", title)
        render_3d(film, seg, out / "x2br_3d.png")
        render_panel(out / "x2br_panel.png", volume.GetName(), seg.GetName(), args.quality, args.device, status)
    for name in ("x2br_panel.png", "x2br_overlay.png", "x2br_3d.png"):
        shrink_png(out / name)
        print(f"{out / name}: {(out / name).stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
