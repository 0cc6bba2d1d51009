"""Where a reconstruction goes in a 3D Slicer scene, so that no run destroys an earlier one.

MRML classes only (no Qt): the Slicer module asks these functions and wires the answers to its
widgets and dialogs; the headless tests run them on a real MRML scene (slicer-core wheel).

The rules
---------
* Each Reconstruct makes a NEW segmentation, named after the film and the run
  (``<film> bones (X2BR run 2)``), and a placed film of its own; earlier results, and the
  film nodes of earlier runs, are never overwritten.
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


def place_film(scene, radiograph_path, name: str):
    """The film placed in the patient for this run (scene.add_radiograph_volume): an existing
    placed film is reused only when it shows the very same file with the very same geometry,
    otherwise a new node; a film of another radiograph or run is never overwritten."""
    from . import scene as scene_mod
    from .io.radiograph import read_radiograph

    radiograph = read_radiograph(radiograph_path)
    geometry = radiograph.geometry.to_json()
    for node in _nodes(scene, "vtkMRMLScalarVolumeNode"):
        if (node.GetAttribute("X2BR.role") and node.GetAttribute("X2BR.source") == str(radiograph.path)
                and node.GetAttribute("X2BR.geometry") == geometry and node.GetImageData() is not None
                and np.array_equal(scene_mod.film_array(node), radiograph.image)):
            return node
    return scene_mod.add_radiograph_volume(scene, radiograph, name=scene.GenerateUniqueName(name))


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
                meshes_dir=None):
    """Load one run's output: place its film, load its bones where :func:`choose_output` said
    (and, when ``meshes_dir`` holds the command's closed meshes, show those: :func:`load_closed_meshes`).

    Returns (film node or None when the film could not be placed, segmentation node, notes:
    [str] for the user). Nothing earlier is overwritten unless ``choice.node`` was picked by
    the user and has not changed since ``choice`` was made.
    """
    from . import scene as scene_mod

    choice = choice or choose_output(scene, film_name)
    notes, node = [], choice.node
    if node is not None and (node.GetScene() is None or segmentation_fingerprint(node) != choice.fingerprint):
        notes.append(f"'{choice.name}' changed while X2BR was running: the result is a new segmentation instead")
        node = None
    try:
        film = place_film(scene, radiograph_path, f"{film_name} (X2BR film)")
    except Exception as e:  # the bones are still worth loading
        film = None
        notes.append(f"the film could not be placed in the scene: {e}")
    name = choice.name if node is not None else result_name(scene, film_name, choice.run)
    segmentation = scene_mod.load_segmentation(scene, Path(segmentation_path), node=node, name=name,
                                               source_volume=film)
    if meshes_dir is not None and Path(meshes_dir).is_dir():
        load_closed_meshes(segmentation, meshes_dir)
    mark_as_result(segmentation, film_name, choice.run)
    return film, segmentation, notes


__all__ = ["FILM_ATTRIBUTE", "RUN_ATTRIBUTE", "FINGERPRINT_ATTRIBUTE", "segmentation_fingerprint", "mark_as_result",
           "content_at_risk", "next_run", "result_name", "OutputChoice", "choose_output", "place_film",
           "load_closed_meshes", "load_result"]
