"""Which Python packages X2BR may install into 3D Slicer's Python, and which it never touches.

Qt-free and Slicer-free: the Slicer module (``X2BR/X2BR.py``) asks :func:`plan` what to do
and only wires the answer to Slicer's installer; the headless tests run the same decisions.

The rules
---------
* Slicer's own packages (:data:`SLICER_OWN`: numpy, scipy, vtk, SimpleITK, pydicom, Pillow,
  requests and what requests needs, pip's own tools...) and the PyTorch extension's torch and
  torchvision are never installed, upgraded or downgraded by X2BR, neither directly nor as a
  dependency of what X2BR installs: they are passed to Slicer's ``pip_ensure`` as
  ``skip_packages`` and pinned at their installed versions in a pip constraints file.
  When one of them is missing or older than X2BR needs (:data:`SLICER_OWN_NEEDED`), X2BR says
  so and installs nothing: replacing it could break Slicer or another extension.
* torch comes from the PyTorch extension (installed through it when absent). An installed
  torch older than :data:`TORCH_MINIMUM` is never replaced silently: :func:`torch_problem`
  says what to do.
* X2BR's own requirements (:data:`CORE_REQUIREMENTS`) are installed at the first
  reconstruction, ultralytics among them: the bone detector runs on every film (the film check
  and the pixel-spacing estimate, X2BRLib/filmcheck.py and scale.py), not only for the
  refinement. What only the refinement needs (:data:`REFINE_REQUIREMENTS`, empty today) only when
  the refinement is asked for.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import re
from dataclasses import dataclass

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

# Distributions 3D Slicer ships in its Python (Slicer's SuperBuild: python-numpy, -scipy, -SimpleITK,
# -dicom-requirements, -requests-requirements, pip/setuptools/wheel, psutil, GitPython...) and vtk.
SLICER_OWN = ("numpy", "scipy", "vtk", "SimpleITK", "pydicom", "pillow", "six", "dicomweb-client", "retrying",
              "requests", "urllib3", "idna", "certifi", "charset-normalizer", "chardet", "packaging", "pip",
              "setuptools", "wheel", "psutil", "GitPython", "gitdb", "smmap", "PyGithub", "PyJWT")
PYTORCH_EXTENSION = ("torch", "torchvision")
NEVER_INSTALL = SLICER_OWN + PYTORCH_EXTENSION

# What X2BR's code needs of packages it never installs (checked, never fixed by pip). pydicom 2.4
# is what Slicer ships; the radiograph reader supports it (pydicom.pixel_data_handlers there).
SLICER_OWN_NEEDED = ("numpy>=1.26", "scipy>=1.11", "SimpleITK>=2.3", "pydicom>=2.4", "pillow>=10")
TORCH_MINIMUM = "2.4"  # as pyproject.toml
TORCHVISION_MINIMUM = "0.19"
TORCH_REQUIREMENT = f">={TORCH_MINIMUM}"
TORCHVISION_REQUIREMENT = f">={TORCHVISION_MINIMUM}"

# Installed into Slicer's Python by X2BR, at first use. Ranges, not pins: they live next to
# other extensions' packages. matplotlib draws OUT/preview.png; slicerio writes .seg.nrrd.
# ultralytics: the bone detector (YOLOv9), needed for every film since the film check and the scale
# estimate use it; pulls in opencv-python, polars, ultralytics-thop... Internals are used: the tested
# minor release (as pyproject).
CORE_REQUIREMENTS = ("timm>=1.0", "scikit-image>=0.22", "slicerio>=1.4", "tqdm>=4.66", "matplotlib>=3.5",
                     "ultralytics>=8.4.190,<8.5")
# The refinement's bone detector (YOLOv9); pulls in opencv-python, polars, ultralytics-thop...
REFINE_REQUIREMENTS: tuple = ()


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name (``SimpleITK`` -> ``simpleitk``, ``scikit_image`` -> ``scikit-image``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_versions() -> dict[str, str]:
    """{canonical distribution name: version} of everything installed in this Python (metadata
    only: nothing is imported)."""
    importlib.invalidate_caches()  # see what a pip run in another process installed
    out = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out.setdefault(canonical(name), dist.version)
    return out


def _satisfied(requirement: str, installed: dict[str, str]) -> bool:
    req = Requirement(requirement)
    version = installed.get(canonical(req.name))
    return version is not None and req.specifier.contains(version, prereleases=True)


def _older_than(version: str, minimum: str) -> bool:
    try:
        return Version(version).release < Version(minimum).release  # 2.4.0+cu121 is 2.4
    except InvalidVersion:
        return False  # a version we cannot read: let the import decide


def torch_problem(installed: dict[str, str]) -> str | None:
    """One message saying what to do when the installed torch or torchvision is older than X2BR
    needs; None when both are recent enough or torch is absent (then the PyTorch extension
    installs a current one)."""
    found = []
    for name, minimum in (("torch", TORCH_MINIMUM), ("torchvision", TORCHVISION_MINIMUM)):
        version = installed.get(name)
        if version is not None and _older_than(version, minimum):
            found.append(f"{name} {version} (X2BR needs {minimum} or newer)")
    if not found:
        return None
    return ("the installed PyTorch is too old for X2BR: " + ", ".join(found) + ". X2BR does not replace it "
            "(other extensions may use it). To update it: in Slicer's Python console run "
            "`import PyTorchUtils; PyTorchUtils.PyTorchUtilsLogic().uninstallTorch()`, restart Slicer, then click "
            "Reconstruct: X2BR installs a current PyTorch through the PyTorch extension")


@dataclass(frozen=True)
class DependencyPlan:
    """What to do before a reconstruction in Slicer.

    install: X2BR requirements not yet satisfied, to install (``pip_ensure``).
    skip: distribution names pip must never install, upgrade or downgrade (``skip_packages``).
    pins: ``name==version`` of the installed ones among ``skip`` (a pip constraints file).
    install_torch: torch is absent: install it through the PyTorch extension first.
    problems: what installing must not fix (Slicer's own packages missing or too old, torch
        too old), one message each; when not empty, install nothing and show them.
    """

    install: tuple[str, ...]
    skip: tuple[str, ...]
    pins: tuple[str, ...]
    install_torch: bool
    problems: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return not (self.install or self.install_torch or self.problems)


def plan(refine: bool = False, installed: dict[str, str] | None = None) -> DependencyPlan:
    """Decide what to install, given what is installed (default: this Python's packages, read
    from metadata) and whether the refinement is asked for."""
    installed = installed_versions() if installed is None else {canonical(k): v for k, v in installed.items()}
    problems = []
    for requirement in SLICER_OWN_NEEDED:
        if not _satisfied(requirement, installed):
            req = Requirement(requirement)
            have = installed.get(canonical(req.name))
            problems.append(f"X2BR needs {req.name}{req.specifier} but this Slicer has "
                            f"{req.name + ' ' + have if have else 'no ' + req.name}; X2BR does not replace "
                            "Slicer's own packages: use a recent 3D Slicer release")
    torch = torch_problem(installed)
    if torch:
        problems.append(torch)
    wanted = CORE_REQUIREMENTS + (REFINE_REQUIREMENTS if refine else ())
    never = {canonical(n) for n in NEVER_INSTALL}
    install = tuple(r for r in wanted if canonical(Requirement(r).name) not in never and not _satisfied(r, installed))
    pins = tuple(f"{name}=={installed[canonical(name)]}" for name in NEVER_INSTALL if canonical(name) in installed)
    return DependencyPlan(install=install, skip=NEVER_INSTALL, pins=pins,
                          install_torch="torch" not in installed, problems=tuple(problems))


def import_name(requirement: str) -> str:
    """The module a requirement's distribution is imported as (scikit-image -> skimage)."""
    name = canonical(Requirement(requirement).name)
    return {"scikit-image": "skimage", "pillow": "PIL", "opencv-python": "cv2"}.get(name, name.replace("-", "_"))


__all__ = ["SLICER_OWN", "PYTORCH_EXTENSION", "NEVER_INSTALL", "SLICER_OWN_NEEDED", "TORCH_MINIMUM",
           "TORCHVISION_MINIMUM", "TORCH_REQUIREMENT", "TORCHVISION_REQUIREMENT", "CORE_REQUIREMENTS",
           "REFINE_REQUIREMENTS", "canonical", "installed_versions", "torch_problem", "DependencyPlan", "plan",
           "import_name"]
