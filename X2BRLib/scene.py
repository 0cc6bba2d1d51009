"""X2BR results <-> MRML nodes: the one place X2BR builds 3D Slicer scene content.

MRML and VTK classes only: no Qt, no ``slicer.util``, no GUI. The same code runs
inside 3D Slicer (the X2BR module) and against the ``slicer-core`` wheel's real
MRML scene in the headless tests.

Frames and units
----------------
X2BRLib works in patient LPS millimetres; Slicer's scene is RAS millimetres.
The conversion happens here and nowhere else (:data:`LPS_TO_RAS`); ``.seg.nrrd``
files declare their space (``left-posterior-superior``) and Slicer's storage
node converts them on reading.

The film (radiograph) is placed on the plane through the isocentre parallel to
the detector, scaled so that every point of that plane lies on the pixel it
projects to: pixel spacing there = detector spacing / magnification. Columns
run toward the patient's left, rows toward the feet (``ProjectionGeometry``'s
convention), so in Slicer's coronal (Green) view the film is upright, seen from
the front, and the reconstructed bones (in the reconstruction box around the
isocentre, between the source and the detector) are cut by the film's plane
exactly where they appear on the film. Bones in front of or behind that plane
are magnified a little more or less (a few per cent) than the plane itself:
the overlay is exact on the plane, approximate away from it.

A pair's lateral film (LL / RL) is placed by the same rule with its own geometry: on the sagittal
plane through the (shared) isocentre, columns toward the patient's back (LL) or front (RL), rows
toward the feet, so the Yellow view shows it upright and the bones cut by that plane.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .anatomy import by_name
from .errors import InputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # (4, 4), its own inverse
MIN_SIDE_PX, MAX_SIDE_PX = 64, 8192  # as X2BRLib.io.radiograph
READABLE_SUFFIXES = (".dcm", ".dicom", ".dic", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nrrd", ".nhdr",
                     ".nii", ".nii.gz", ".mha", ".mhd")
CLOSED_SURFACE = "Closed surface"
BINARY_LABELMAP = "Binary labelmap"
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as the radiograph reader
FILM_ROLE = "placed radiograph"  # X2BR.role of a placed film (the PA / AP film a run read)
LATERAL_FILM_ROLE = "placed lateral radiograph"  # ... of a pair's lateral film


def _slicer():
    import slicer  # Slicer's own module inside Slicer, the slicer-core wheel in tests

    return slicer


def _vtk_matrix(m) -> "object":
    import vtk

    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(m[r][c]))
    return out


def _numpy_matrix(vtk_matrix) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_ijk_to_ras(volume_node) -> np.ndarray:
    """(4, 4) float64: voxel index (i, j, k, 1) of a volume node -> RAS mm."""
    import vtk

    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return _numpy_matrix(m)


# ---------------------------------------------------------------------- a scene without Slicer's GUI
def headless_scene():
    """A bare Slicer application core for scripts and tests (inside Slicer use ``slicer.mrmlScene``):
    a vtkMRMLScene, the application logic and the module logics X2BR's scene code relies on
    (colours with their default tables, volumes, segmentations, subject hierarchy), composed the
    way trame-slicer's SlicerApp does. Returns (scene, {logic name: logic})."""
    sl = _slicer()
    scene = sl.vtkMRMLScene()
    app = sl.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    colors = app.GetColorLogic()
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()
    logics = {"Application": app, "Colors": colors}
    for name, logic in (("Volumes", sl.vtkSlicerVolumesLogic()),
                        ("Segmentations", sl.vtkSlicerSegmentationsModuleLogic()),
                        ("SubjectHierarchy", sl.vtkSlicerSubjectHierarchyModuleLogic())):
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app)
        logics[name] = logic
    for name, logic in logics.items():
        if name != "Application":
            app.SetModuleLogic(name, logic)
    return scene, logics


# ---------------------------------------------------------------------- input radiograph checks
def check_radiograph_volume(volume_node) -> dict:
    """Check that a volume node can be used as one 2D chest radiograph.

    Accepts a single-slice scalar volume (DICOM CR/DX, PNG, JPEG... as Slicer loads
    them) and a single-slice RGB(A) vector volume (converted to luminance, with a
    warning). Raises :class:`~X2BRLib.errors.InputError` with a message for the user
    for: no node, no image data, a label map, a 3D volume (more than one slice, e.g.
    a CT), a 1D image, other component counts, implausible sizes.

    Returns {"size_px": (width, height), "components": int, "spacing_mm": (3,) floats,
    "warnings": [str, ...]}.
    """
    if volume_node is None:
        raise InputError("no radiograph selected: load a chest radiograph (DICOM module, or drag and drop a "
                         "PNG/JPEG file) and pick it as the input")
    name = volume_node.GetName()
    if volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(f"'{name}' is a label map, not a radiograph")
    image = volume_node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise InputError(f"'{name}' holds no image data")
    dims = [int(d) for d in image.GetDimensions()]
    big = [d for d in dims if d > 1]
    if len(big) == 3:
        raise InputError(f"'{name}' is a 3D volume ({dims[0]} x {dims[1]} x {dims[2]} voxels, {dims[2]} slices); "
                         "X2BR reconstructs from ONE 2D chest radiograph (PA or AP). A CT or other volume "
                         "cannot be used: load the radiograph itself (DICOM CR/DX, PNG or JPEG)")
    if len(big) < 2:
        raise InputError(f"'{name}' is not a 2D image ({dims[0]} x {dims[1]} x {dims[2]} voxels)")
    w, h = big
    if min(w, h) < MIN_SIDE_PX or max(w, h) > MAX_SIDE_PX:
        raise InputError(f"'{name}' is {w} x {h} pixels: a radiograph must have {MIN_SIDE_PX} to {MAX_SIDE_PX} "
                         "pixels on each side")
    comps = int(image.GetNumberOfScalarComponents())
    warnings = []
    if comps in (3, 4):
        if _channels_differ(image):
            warnings.append(f"'{name}' is a colour (RGB) image: it is converted to luminance; a radiograph "
                            "should be greyscale")
    elif comps != 1:
        raise InputError(f"'{name}' has {comps} components per pixel: expected a greyscale radiograph "
                         "(1 component) or an RGB image (3 or 4)")
    spacing = [float(s) for s in volume_node.GetSpacing()]
    if all(abs(s - 1.0) < 1e-9 for s in spacing):
        warnings.append(f"'{name}' has a pixel spacing of exactly 1 mm, which is what Slicer shows for files "
                        "without spacing (PNG, JPEG); the detector pixel spacing decides the size of the bones")
    return {"size_px": (w, h), "components": comps, "spacing_mm": tuple(spacing), "warnings": warnings}


def _channels_differ(image) -> bool:
    """Do the R, G, B channels of an RGB(A) vtkImageData differ (a colour image, not grey stored as RGB)?"""
    from vtkmodules.util import numpy_support

    arr = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    from .io.radiograph import looks_coloured

    return looks_coloured(arr[:: max(1, len(arr) // 1_000_000), :3])  # up to ~1 M pixels


def film_array(volume_node) -> np.ndarray:
    """The single slice of a radiograph volume node: (H, W) float32, ``[row, column]`` in the
    node's (j, i) voxel order; RGB(A) converted to luminance (BT.601). Checks the node first."""
    from vtkmodules.util import numpy_support

    info = check_radiograph_volume(volume_node)
    image = volume_node.GetImageData()
    dims = image.GetDimensions()
    arr = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    arr = arr.reshape(dims[2], dims[1], dims[0], info["components"]).astype(np.float32)  # (k, j, i, c)
    arr = np.take(arr, 0, axis=next(a for a in range(3) if arr.shape[a] == 1))  # the one slice
    if info["components"] >= 3:
        return (arr[..., :3] @ _LUMA).astype(np.float32)
    return arr[..., 0]


def source_file(volume_node) -> str | None:
    """The file a volume node was read from, when the X2BR reader can use it as is: it exists,
    has a radiograph-like suffix and the node was not modified since it was read. None otherwise
    (then write the node with :func:`write_volume_file`). The original file is preferred: it
    keeps what Slicer's volume does not (DICOM spacing and view tags; no pixel spacing in PNG)."""
    storage = volume_node.GetStorageNode() if volume_node is not None else None
    path = storage.GetFileName() if storage is not None else None
    if not path or not os.path.isfile(path):
        return None
    name = os.path.basename(path).lower()
    if not name.endswith(READABLE_SUFFIXES):
        return None
    if volume_node.GetModifiedSinceRead():
        return None
    return path


def write_volume_file(volume_node, path) -> Path:
    """Write a volume node to NRRD (``.nrrd``, LPS, as Slicer saves volumes) without touching the
    node's own storage node (so its file name in the scene does not change). Returns the path."""
    sl = _slicer()
    path = Path(path)
    if not path.name.lower().endswith((".nrrd", ".nhdr")):
        raise InputError("write a radiograph volume to a .nrrd file", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = sl.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)
    if not storage.WriteData(volume_node):
        raise InputError(f"could not write volume '{volume_node.GetName()}'", path)
    return path


# ---------------------------------------------------------------------- the placed film
def film_ijk_to_lps(geometry) -> np.ndarray:
    """(4, 4) float64: film pixel (i = column, j = row, k = 0, 1) -> LPS mm on the plane through
    the isocentre parallel to the detector, at the point that projects onto that pixel.

    Pixel spacing on that plane = detector spacing / magnification; k points along
    columns x rows (right-handed), with the mean in-plane spacing as slice thickness.
    """
    s = geometry.source
    n = geometry.normal
    iso = np.array(geometry.isocenter_lps_mm)

    def on_plane(uv):
        d = geometry.pixel_to_lps(np.asarray(uv, float)[None])[0]
        t = ((iso - s) @ n) / ((d - s) @ n)
        return s + t * (d - s)

    origin = on_plane((0.0, 0.0))
    col, row = on_plane((1.0, 0.0)) - origin, on_plane((0.0, 1.0)) - origin
    normal = np.cross(col, row)
    normal *= 0.5 * (np.linalg.norm(col) + np.linalg.norm(row)) / np.linalg.norm(normal)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = col, row, normal, origin
    return m


def film_ijk_to_ras(geometry) -> np.ndarray:
    """:func:`film_ijk_to_lps` in Slicer's RAS frame."""
    return LPS_TO_RAS @ film_ijk_to_lps(geometry)


def add_radiograph_volume(scene, radiograph, name: str | None = None, node=None, role: str = FILM_ROLE):
    """A scalar volume node showing a radiograph placed in the patient (see the module docstring).

    radiograph: a :class:`~X2BRLib.io.radiograph.Radiograph` or a file path (read with
        ``read_radiograph``). Its image (H, W) float32 in [0, 1], bone bright, becomes a
        W x H x 1 volume; window 0..1. Its geometry places it: a frontal film on the coronal
        plane through the isocentre, a lateral (LL / RL) on the sagittal one, the same rule.
    node: a vtkMRMLScalarVolumeNode to fill (its image and geometry are replaced), or None
        to add a new one named ``name`` (default: the file's stem).
    role: the node's ``X2BR.role`` attribute (:data:`FILM_ROLE`, or :data:`LATERAL_FILM_ROLE` for a
        pair's lateral film).
    Returns the node. The film plane is the RAS plane through the isocentre.
    """
    import vtk
    from vtkmodules.util import numpy_support

    from .io.radiograph import Radiograph, read_radiograph

    if not isinstance(radiograph, Radiograph):
        radiograph = read_radiograph(radiograph)
    img = np.ascontiguousarray(radiograph.image, dtype=np.float32)
    h, w = img.shape
    if (w, h) != tuple(radiograph.geometry.size_px):
        raise InputError(f"image {w} x {h} does not match its geometry {radiograph.geometry.size_px}",
                         radiograph.path)
    if name is None:
        name = Path(radiograph.path).name.split(".")[0] if radiograph.path else "radiograph"
    image = vtk.vtkImageData()
    image.SetDimensions(w, h, 1)
    scalars = numpy_support.numpy_to_vtk(img.ravel(), deep=True, array_type=vtk.VTK_FLOAT)
    scalars.SetName("radiograph")
    image.GetPointData().SetScalars(scalars)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(_vtk_matrix(film_ijk_to_ras(radiograph.geometry)))
    node.SetAndObserveImageData(image)
    node.SetAttribute("X2BR.role", role)
    node.SetAttribute("X2BR.geometry", radiograph.geometry.to_json())
    if radiograph.path:
        node.SetAttribute("X2BR.source", str(radiograph.path))
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None:
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(1.0, 0.5)
    return node


def film_plane_ras(volume_node) -> tuple[np.ndarray, np.ndarray]:
    """(point (3,), unit normal (3,)) of a placed film's plane in RAS mm."""
    m = volume_ijk_to_ras(volume_node)
    normal = m[:3, 2] / np.linalg.norm(m[:3, 2])
    return m[:3, 3].copy(), normal


# ---------------------------------------------------------------------- segmentation
def ensure_conversion_rules() -> None:
    """Register the labelmap <-> closed surface converter rules if nobody has (Slicer's
    Segmentations module does it at start-up; a bare MRML scene needs it). Call before reading
    a segmentation so that the representations the file lists can be created on load."""
    sl = _slicer()
    factory = sl.vtkSegmentationConverterFactory.GetInstance()
    have = {type(r).__name__ for r in factory.GetConverterRules()}
    for cls in ("vtkBinaryLabelmapToClosedSurfaceConversionRule", "vtkClosedSurfaceToBinaryLabelmapConversionRule"):
        if cls not in have and hasattr(sl, cls):
            factory.RegisterConverterRule(getattr(sl, cls)())


def apply_catalog(segmentation_node) -> list[str]:
    """Name, colour and terminology (segment tag ``TerminologyEntry``) of every segment whose ID
    is a catalog bone name (as X2BR writes them). Returns the bone segment IDs in catalog order."""
    sl = _slicer()
    segmentation = segmentation_node.GetSegmentation()
    tag = sl.vtkSegment.GetTerminologyEntryTagName()
    found = []
    table = by_name()
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        b = table.get(segment_id)
        if b is None:
            continue
        segment = segmentation.GetSegment(segment_id)
        segment.SetName(b.display_name)
        segment.SetColor(*b.color_rgb)
        segment.SetTag(tag, b.slicer_terminology_string())
        found.append(b)
    return [b.name for b in sorted(found, key=lambda b: b.label)]


def _nrrd_grid_extent(path) -> list[int] | None:
    """[i0, i1, j0, j1, k0, k1] of a .seg.nrrd's whole voxel grid (its header's ``sizes`` and
    ``Segmentation_ReferenceImageExtentOffset``), or None if the header does not say."""
    sizes, offset = None, [0, 0, 0]
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("latin1").strip()
            if not line:
                break
            if line.startswith("sizes:"):
                sizes = [int(v) for v in line.split(":", 1)[1].split()][-3:]
            elif line.startswith("Segmentation_ReferenceImageExtentOffset:="):
                offset = [int(v) for v in line.split(":=", 1)[1].split()][:3]
    if sizes is None or len(sizes) != 3:
        return None
    return [v for o, n in zip(offset, sizes) for v in (o, o + n - 1)]


def _set_reference_geometry(segmentation_node, extent) -> None:
    """Keep the whole reconstruction grid as the segmentation's geometry (Slicer crops labelmaps
    to their content on reading), so that Segment Editor edits on that grid whatever source
    volume is picked (the film is a single slice) and segments can grow anywhere in the box."""
    import vtk

    sl = _slicer()
    segmentation = segmentation_node.GetSegmentation()
    if segmentation.GetNumberOfSegments() == 0 or extent is None:
        return
    labelmap = segmentation.GetSegment(segmentation.GetNthSegmentID(0)).GetRepresentation(BINARY_LABELMAP)
    if labelmap is None:
        return
    grid = sl.vtkOrientedImageData()
    grid.SetExtent(*extent)
    m = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(m)
    grid.SetImageToWorldMatrix(m)
    segmentation.SetConversionParameter(sl.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
                                        sl.vtkSegmentationConverter.SerializeImageGeometry(grid))


def load_segmentation(scene, source, node=None, name: str = "X2BR bones", source_volume=None,
                      closed_surfaces: bool = True):
    """Load X2BR's bones into a vtkMRMLSegmentationNode: one named, coloured segment per bone.

    source: a ``bones.seg.nrrd`` path (``x2br reconstruct`` output) or a
        :class:`~X2BRLib.pipeline.Reconstruction` (written to a temporary ``.seg.nrrd``
        by the same writer, then read: one path for both).
    node: a segmentation node to fill (its segments are replaced: only when the user chose it, see
        ``scene_results.choose_output``) or None to add one named ``name``.
    source_volume: optional volume node (the placed film) referenced as the segmentation's
        source volume, so that Segment Editor selects it; the segmentation's own grid stays.
    closed_surfaces: also create the closed-surface representation (shown in 3D).

    The label grid keeps the reconstruction box's geometry (mm); segment IDs are the catalog
    bone names, terminology from the catalog. The node's storage node is left unset so that
    Save proposes a new file rather than the temporary one. Returns the node.
    """
    if not isinstance(source, (str, os.PathLike)):
        from .io.outputs import write_segmentation_nrrd

        with tempfile.TemporaryDirectory(prefix="x2br-seg-") as tmp:
            path = write_segmentation_nrrd(Path(tmp) / "bones.seg.nrrd", source.labels_xyz, source.origin_lps_mm,
                                           source.spacing_mm)
            return load_segmentation(scene, path, node, name, source_volume, closed_surfaces)

    sl = _slicer()
    path = Path(source)
    if not path.is_file():
        raise InputError("segmentation file not found", path)
    ensure_conversion_rules()
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    else:
        node.GetSegmentation().RemoveAllSegments()
    storage = sl.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise InputError("could not be read as a Slicer segmentation", path)
    apply_catalog(node)
    _set_reference_geometry(node, _nrrd_grid_extent(path))
    node.CreateDefaultDisplayNodes()
    if source_volume is not None:
        node.SetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole(), source_volume.GetID())
    if closed_surfaces:
        create_closed_surfaces(node)
    from .scene_results import mark_as_result

    mark_as_result(node)  # what X2BR loaded: later edits are told apart from it
    return node


def create_closed_surfaces(segmentation_node) -> bool:
    """Closed surfaces of every segment (Slicer's labelmap -> surface rule, its default smoothing);
    shown in 3D. Returns True when every segment has a non-empty surface."""
    ensure_conversion_rules()
    segmentation = segmentation_node.GetSegmentation()
    ok = bool(segmentation_node.CreateClosedSurfaceRepresentation())
    if not ok or not all_surfaces_non_empty(segmentation_node):
        # a file that lists "Closed surface" read before the rules existed: convert again
        ok = bool(segmentation.CreateRepresentation(CLOSED_SURFACE, True))
    display = segmentation_node.GetDisplayNode()
    if display is not None:
        display.SetPreferredDisplayRepresentationName3D(CLOSED_SURFACE)
    return ok and all_surfaces_non_empty(segmentation_node)


def closed_surface(segmentation_node, segment_id: str):
    """A copy of one segment's closed surface (vtkPolyData, RAS mm)."""
    import vtk

    poly = vtk.vtkPolyData()
    segmentation_node.GetClosedSurfaceRepresentation(segment_id, poly)
    return poly


def all_surfaces_non_empty(segmentation_node) -> bool:
    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    return bool(ids) and all(
        (rep := segmentation.GetSegment(i).GetRepresentation(CLOSED_SURFACE)) is not None
        and rep.GetNumberOfPoints() > 0 for i in ids)


def save_segmentation(segmentation_node, path) -> Path:
    """Write a segmentation node to ``.seg.nrrd`` with Slicer's segmentation storage node (LPS,
    compressed), without attaching that storage node to the node. Returns the path."""
    sl = _slicer()
    path = Path(path)
    if not path.name.lower().endswith(".seg.nrrd"):
        raise InputError("segmentation file names end in .seg.nrrd", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = sl.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(segmentation_node):
        raise InputError(f"could not write segmentation '{segmentation_node.GetName()}'", path)
    return path


__all__ = ["LPS_TO_RAS", "FILM_ROLE", "LATERAL_FILM_ROLE", "headless_scene", "check_radiograph_volume", "film_array",
           "source_file", "write_volume_file",
           "film_ijk_to_lps", "film_ijk_to_ras", "add_radiograph_volume", "film_plane_ras", "volume_ijk_to_ras",
           "ensure_conversion_rules", "apply_catalog", "load_segmentation", "create_closed_surfaces",
           "closed_surface", "all_surfaces_non_empty", "save_segmentation"]
