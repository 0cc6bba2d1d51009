"""Where a reconstruction goes in a 3D Slicer scene, so that no run destroys an earlier one.

MRML classes only (no Qt): the Slicer module asks these functions and wires the answers to its
widgets and dialogs; the headless tests run them on a real MRML scene (slicer-core wheel).

The rules
---------
* Each Reconstruct makes a NEW segmentation, named after the film and the run
  (``<film> bones (X2BR run 2)``), and a placed film of its own (with a lateral film, a placed
  lateral film too); earlier results, and the film nodes of earlier runs, are never overwritten.
* An existing segmentation is replaced only when the user picked it as the output. Then
  :func:`choose_output` says whether anything would be lost (segments that X2BR did not load, or
  that were edited since X2BR loaded them: see :func:`segmentation_fingerprint`); the module asks
  before going on. If the node changes again while the reconstruction runs, :func:`load_result`
  loads into a new node instead of discarding the newer edits.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILM_ATTRIBUTE = "X2BR.film"  # on a result segmentation: the name of the film it was made from
RUN_ATTRIBUTE = "X2BR.run"  # its run number for that film (1, 2...)
FINGERPRINT_ATTRIBUTE = "X2BR.fingerprint"  # segmentation_fingerprint() when X2BR loaded it
LATERAL_REFERENCE = "x2brLateralFilm"  # node reference role: a result segmentation -> its placed lateral film


def _segment_ids(segmentation) -> list[str]:
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def _hash_image(h, image) -> None:
    """Add a labelmap layer (vtkOrientedImageData) to a hash: its non-zero voxels cropped to their
    bounding box, with their place in the world, so that padding or cropping of the extent
    (which Slicer does freely) does not count as an edit."""
    import vtk
    from vtkmodules.util import numpy_support

    if image is None or image.GetPointData().GetScalars() is None:
        h.update(b"no image")
        return
    dims = image.GetDimensions()
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])  # (k, j, i)
    nonzero = np.argwhere(values)
    if len(nonzero) == 0:
        h.update(b"empty")
        return
    lo, hi = nonzero.min(0), nonzero.max(0) + 1
    crop = np.ascontiguousarray(values[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
    extent = image.GetExtent()
    first_ijk = np.array([extent[0] + lo[2], extent[2] + lo[1], extent[4] + lo[0]])
    m = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    world = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    h.update(np.round(world, 6).tobytes() + first_ijk.astype(np.int64).tobytes())
    h.update(str(crop.shape).encode() + str(crop.dtype).encode() + crop.tobytes())


def _hash_poly(h, poly) -> None:
    from vtkmodules.util import numpy_support

    if poly is None or poly.GetPoints() is None:
        h.update(b"no surface")
        return
    h.update(np.round(numpy_support.vtk_to_numpy(poly.GetPoints().GetData()), 4).tobytes())
    polys = poly.GetPolys()
    if polys is not None and polys.GetNumberOfCells():
        h.update(numpy_support.vtk_to_numpy(polys.GetConnectivityArray()).tobytes())


def segmentation_fingerprint(segmentation_node) -> str:
    """SHA-256 of what a user edits in a segmentation: segment IDs, names, colours, and the
    source representation (the labelmap voxels, or the surfaces when those are the source).
    Display settings and derived representations (Slicer's 3D surfaces) do not count."""
    segmentation = segmentation_node.GetSegmentation()
    source = segmentation.GetSourceRepresentationName() if hasattr(segmentation, "GetSourceRepresentationName") \
        else segmentation.GetMasterRepresentationName()
    h = hashlib.sha256(str(source).encode())
    layers = {}
    for segment_id in _segment_ids(segmentation):
        segment = segmentation.GetSegment(segment_id)
        h.update(f"|{segment_id}|{segment.GetName()}|{np.round(segment.GetColor(), 6).tolist()}".encode())
        representation = segment.GetRepresentation(source)
        if representation is not None and representation.IsA("vtkImageData"):
            layer = segmentation.GetLayerIndex(segment_id)
            h.update(f"|layer {layer} value {segment.GetLabelValue()}".encode())
            layers.setdefault(layer, representation)
        else:
            _hash_poly(h, representation)
    for layer in sorted(layers):
        _hash_image(h, layers[layer])
    return h.hexdigest()


def mark_as_result(segmentation_node, film_name: str | None = None, run: int | None = None) -> None:
    """Record that X2BR loaded this content now (and from which film, which run)."""
    if film_name is not None:
        segmentation_node.SetAttribute(FILM_ATTRIBUTE, str(film_name))
    if run is not None:
        segmentation_node.SetAttribute(RUN_ATTRIBUTE, str(int(run)))
    segmentation_node.SetAttribute(FINGERPRINT_ATTRIBUTE, segmentation_fingerprint(segmentation_node))


def content_at_risk(segmentation_node) -> str | None:
    """What replacing the segments of this node would lose, in words; None when nothing would
    (no segments, or an X2BR result unchanged since X2BR loaded it)."""
    n = segmentation_node.GetSegmentation().GetNumberOfSegments()
    if n == 0:
        return None
    name = segmentation_node.GetName()
    recorded = segmentation_node.GetAttribute(FINGERPRINT_ATTRIBUTE)
    if recorded is None:
        return f"'{name}' holds {n} segment{'s' * (n != 1)} that X2BR did not make"
    if recorded != segmentation_fingerprint(segmentation_node):
        return f"'{name}' was edited since X2BR loaded it ({n} segment{'s' * (n != 1)})"
    return None


def next_run(scene, film_name: str) -> int:
    """1 + the highest run number of the X2BR results of this film in the scene."""
    runs = [0]
    for node in _nodes(scene, "vtkMRMLSegmentationNode"):
        if node.GetAttribute(FILM_ATTRIBUTE) == film_name:
            try:
                runs.append(int(node.GetAttribute(RUN_ATTRIBUTE) or 0))
            except ValueError:
                pass
    return max(runs) + 1


def _nodes(scene, cls: str) -> list:
    return [scene.GetNthNodeByClass(i, cls) for i in range(scene.GetNumberOfNodesByClass(cls))]


def result_name(scene, film_name: str, run: int) -> str:
    name = f"{film_name} bones (X2BR run {run})"
    return name if scene.GetFirstNodeByName(name) is None else scene.GenerateUniqueName(name)


@dataclass
class OutputChoice:
    """Where the next result goes.

    node: the segmentation to fill (the user's choice), or None for a new one named ``name``.
    question: when not None, ask the user this before replacing ``node``'s segments.
    fingerprint: ``node``'s content when the choice was made (None for a new node): if it
        differs at loading time, :func:`load_result` makes a new node instead.
    """

    node: object
    name: str
    run: int
    question: str | None = None
    fingerprint: str | None = None


def choose_output(scene, film_name: str, chosen=None) -> OutputChoice:
    """A new segmentation unless the user picked one (``chosen``); then whether to ask first."""
    run = next_run(scene, film_name)
    if chosen is None:
        return OutputChoice(None, result_name(scene, film_name, run), run)
    risk = content_at_risk(chosen)
    question = None if risk is None else (
        f"{risk}. Reconstructing into it replaces all its segments: they will be lost. Replace them? "
        "(Cancel, then pick 'Create new segmentation' as output, to keep them.)")
    return OutputChoice(chosen, chosen.GetName(), run, question, segmentation_fingerprint(chosen))


def film_as_reconstructed(report, lateral: bool = False):
    """The film a run reconstructed from, as the command read it: the file its ``report.json``
    names, read again (full resolution; a lateral turned as the pair check turned it), with the
    geometry the reconstruction used (the report's network-form geometry at the file's pixel count
    and the chosen detector spacing: the PA film's estimated one, the lateral's at the PA film's
    isocentre), so the placed film and the bones agree even when the spacing was not the file's.

    report: the run's report (dict) or the path of its ``report.json``; lateral: the pair's lateral
    film (``report["lateral"]``) instead of the film. Returns a
    :class:`~X2BRLib.io.radiograph.Radiograph`; :class:`~X2BRLib.errors.InputError` when the report
    names no such film or the file no longer matches what was reconstructed."""
    import json
    from dataclasses import replace

    from .errors import InputError
    from .geometry import ProjectionGeometry
    from .io.radiograph import read_radiograph

    if not isinstance(report, dict):
        report = json.loads(Path(report).read_text())
    record = report.get("lateral") if lateral else report
    what = "lateral film" if lateral else "film"
    if not record or not record.get("input") or not record.get("geometry"):
        raise InputError(f"the run's report names no {what}")
    meta = record.get("input_meta") or {}
    view = meta.get("view") if meta.get("view_source") == "argument" else None  # the user's --lateral-view
    radiograph = read_radiograph(record["input"], default_spacing_mm=None, view=view,
                                 default_view="LL" if lateral else "PA")
    if lateral and (record.get("mirror_check") or {}).get("corrected"):  # pair.prepare_lateral turned it
        radiograph = replace(radiograph, image=np.ascontiguousarray(radiograph.image[:, ::-1]),
                             meta={**radiograph.meta,
                                   "flipped": list(radiograph.meta.get("flipped") or []) + ["columns"]})
    used = ProjectionGeometry.from_dict(record["geometry"])
    flips = record.get("flipped") if lateral else meta.get("flipped")
    now = list(radiograph.meta.get("flipped") or [])
    if used.view != radiograph.geometry.view or (flips is not None and list(flips) != now):
        raise InputError(f"the {what} reads as {radiograph.geometry.view} "
                         f"(flipped: {', '.join(now) or 'no'}), but the run read it as "
                         f"{used.view} (flipped: {', '.join(flips or []) or 'no'})", record["input"])
    spacing = ((record.get("spacing") if lateral else record.get("scale")) or {}).get("spacing_mm")
    if spacing is None:  # a report without a scale record: the spacing the file gives
        spacing = radiograph.geometry.spacing_mm
    w, h = radiograph.geometry.size_px
    field_mm = max(w * float(spacing[0]), h * float(spacing[1]))  # io.radiograph.to_network_input's square
    if abs(field_mm - used.spacing_mm[0] * used.width) > 1e-3 * field_mm:
        raise InputError(f"the {what} is {w} x {h} px of {float(spacing[0]):.4g} mm, not the film of "
                         f"{used.spacing_mm[0] * used.width:.1f} mm the run reconstructed from", record["input"])
    return replace(radiograph, geometry=replace(used, spacing_mm=tuple(float(v) for v in spacing), size_px=(w, h)))


def place_film(scene, radiograph, name: str, role: str | None = None):
    """The film placed in the patient for this run (scene.add_radiograph_volume): an existing
    placed film is reused only when it shows the very same file with the very same geometry (and
    role), otherwise a new node; a film of another radiograph or run is never overwritten.

    radiograph: a file path (read with the file's geometry) or a Radiograph with the geometry to
    place it by (:func:`film_as_reconstructed`: the PA film or the pair's lateral); role:
    ``scene.FILM_ROLE`` (default) or ``scene.LATERAL_FILM_ROLE``."""
    from . import scene as scene_mod
    from .io.radiograph import Radiograph, read_radiograph

    role = role or scene_mod.FILM_ROLE
    if not isinstance(radiograph, Radiograph):
        radiograph = read_radiograph(radiograph)
    geometry = radiograph.geometry.to_json()
    for node in _nodes(scene, "vtkMRMLScalarVolumeNode"):
        if (node.GetAttribute("X2BR.role") == role and node.GetAttribute("X2BR.source") == str(radiograph.path)
                and node.GetAttribute("X2BR.geometry") == geometry and node.GetImageData() is not None
                and np.array_equal(scene_mod.film_array(node), radiograph.image)):
            return node
    return scene_mod.add_radiograph_volume(scene, radiograph, name=scene.GenerateUniqueName(name), role=role)


def lateral_film_of(segmentation_node):
    """The placed lateral film of the run that made this segmentation (None: no lateral, or not placed)."""
    return segmentation_node.GetNodeReference(LATERAL_REFERENCE)


def load_closed_meshes(segmentation_node, meshes_dir) -> list[str]:
    """Use the command's closed meshes (``meshes/<bone>.stl``, LPS mm: with ``--refine`` the
    deformed template, one closed piece per bone) as the segments' closed-surface representation
    (shown in 3D), in place of Slicer's surfaces computed from the voxel labels. The labels stay
    the source representation (what Segment Editor edits and File > Save writes): after an edit,
    Slicer recomputes that segment's surface from its labels. Returns the segment IDs done."""
    import vtk

    from .scene import CLOSED_SURFACE, LPS_TO_RAS, _vtk_matrix

    done = []
    segmentation = segmentation_node.GetSegmentation()
    for segment_id in _segment_ids(segmentation):
        path = Path(meshes_dir) / f"{segment_id}.stl"
        if not path.is_file():
            continue
        reader = vtk.vtkSTLReader()
        reader.SetFileName(str(path))
        transform = vtk.vtkTransform()
        transform.SetMatrix(_vtk_matrix(LPS_TO_RAS))  # a rotation (det +1): faces keep their orientation
        to_ras = vtk.vtkTransformPolyDataFilter()
        to_ras.SetInputConnection(reader.GetOutputPort())
        to_ras.SetTransform(transform)
        to_ras.Update()
        poly = vtk.vtkPolyData()
        poly.DeepCopy(to_ras.GetOutput())
        if poly.GetNumberOfPolys() == 0:
            continue
        segmentation.GetSegment(segment_id).AddRepresentation(CLOSED_SURFACE, poly)
        done.append(segment_id)
    return done


def load_result(scene, segmentation_path, radiograph_path, film_name: str, choice: OutputChoice | None = None,
                meshes_dir=None, report=None, lateral_name: str | None = None):
    """Load one run's output: place its film (and a pair's lateral film), load its bones where
    :func:`choose_output` said (and, when ``meshes_dir`` holds the command's closed meshes, show
    those: :func:`load_closed_meshes`).

    report: the run's ``report.json`` (path or dict), or None. With it, the film is placed with the
    geometry the reconstruction used (:func:`film_as_reconstructed`) and, when the run read a
    lateral film, that film too (``scene.LATERAL_FILM_ROLE``, named ``<lateral_name> (X2BR lateral
    film)``, lateral_name defaulting to ``<film_name> lateral``), by the same rule: reused only when
    the very same, else a new node. The segmentation references it (:func:`lateral_film_of`).
    Without a report the film is placed from ``radiograph_path`` with the file's geometry.

    Returns (film node or None when the film could not be placed, segmentation node, notes:
    [str] for the user). Nothing earlier is overwritten unless ``choice.node`` was picked by
    the user and has not changed since ``choice`` was made.
    """
    import json

    from . import scene as scene_mod

    choice = choice or choose_output(scene, film_name)
    notes, node = [], choice.node
    if node is not None and (node.GetScene() is None or segmentation_fingerprint(node) != choice.fingerprint):
        notes.append(f"'{choice.name}' changed while X2BR was running: the result is a new segmentation instead")
        node = None
    if report is not None and not isinstance(report, dict):
        report = json.loads(Path(report).read_text())
    try:
        film = place_film(scene, radiograph_path if report is None else film_as_reconstructed(report),
                          f"{film_name} (X2BR film)")
    except Exception as e:  # the bones are still worth loading
        film = None
        notes.append(f"the film could not be placed in the scene: {e}")
    lateral = None
    if report is not None and report.get("lateral"):
        try:
            lateral = place_film(scene, film_as_reconstructed(report, lateral=True),
                                 f"{lateral_name or film_name + ' lateral'} (X2BR lateral film)",
                                 role=scene_mod.LATERAL_FILM_ROLE)
        except Exception as e:
            notes.append(f"the lateral film could not be placed in the scene: {e}")
    name = choice.name if node is not None else result_name(scene, film_name, choice.run)
    segmentation = scene_mod.load_segmentation(scene, Path(segmentation_path), node=node, name=name,
                                               source_volume=film)
    segmentation.SetNodeReferenceID(LATERAL_REFERENCE, lateral.GetID() if lateral is not None else None)
    if meshes_dir is not None and Path(meshes_dir).is_dir():
        load_closed_meshes(segmentation, meshes_dir)
    mark_as_result(segmentation, film_name, choice.run)
    return film, segmentation, notes


__all__ = ["FILM_ATTRIBUTE", "RUN_ATTRIBUTE", "FINGERPRINT_ATTRIBUTE", "LATERAL_REFERENCE", "segmentation_fingerprint",
           "mark_as_result", "content_at_risk", "next_run", "result_name", "OutputChoice", "choose_output",
           "film_as_reconstructed", "place_film", "lateral_film_of", "load_closed_meshes", "load_result"]
