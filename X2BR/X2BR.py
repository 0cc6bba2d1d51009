"""X2BR: 3D thoracic bones from ONE chest radiograph, in 3D Slicer.

This file holds the Slicer wiring only. The reconstruction runs out of process
(``X2BRLib.slicer_process`` runs ``python -m X2BRLib.cli reconstruct``, the
command a user can run) so Slicer never imports torch and never freezes; the
scene content (placed film, segmentation with one segment per bone) is built by
``X2BRLib.scene`` with MRML classes only, tested headless in Testing/.
"""
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Annotated

import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin


def _moduleRoot():
    """The folder holding X2BRLib/ and Resources/: this file's folder once the extension is built
    (both are copied next to X2BR.py), the repository top in a source checkout (X2BR/..)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for root in (here, os.path.dirname(here)):
        if os.path.isdir(os.path.join(root, "X2BRLib")):
            return root
    return here


MODULE_ROOT = _moduleRoot()
if MODULE_ROOT not in sys.path:
    sys.path.insert(0, MODULE_ROOT)

from X2BRLib import slicer_process  # noqa: E402  (standard library only: no torch, no numpy)

SAMPLE_NAME = "X2BRChestRadiograph"
PAPER_URL = "https://arxiv.org/abs/2504.08675"


#
# X2BR
#


class X2BR(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("X2BR")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["X2BR developers"]
        self.parent.helpText = _("""
<p>X2BR reconstructs the thoracic bones in 3D, in millimetres, from <b>one</b> frontal (PA or AP) chest
radiograph: 24 ribs, vertebrae C7 to L1, sternum, clavicles, scapulae and proximal humeri.</p>
<ol>
<li><b>Load</b> a chest radiograph: DICOM CR/DX with the DICOM module, or drag and drop a PNG/JPEG file
into Slicer. To try it: Sample Data module, <i>X2BR</i>, <i>X2BRChestRadiograph</i>.</li>
<li><b>Pick</b> it as <i>Radiograph</i>; choose <i>Quality</i> (fast 3 mm, default 2 mm, high 1 mm voxels)
and <i>Device</i> (auto uses a CUDA GPU when there is one).</li>
<li>Click <b>Reconstruct</b>. The work runs in a separate process: Slicer stays usable, the progress bar
shows the stage and the button becomes <b>Cancel</b>.</li>
<li>Result: a new segmentation per run (<i>film</i> bones (X2BR run <i>n</i>)) with one named, coloured
segment per bone (standard terminology), shown as surfaces in 3D, and the radiograph placed in the patient
(coronal view) so the bones overlay it; with a <i>Lateral film</i>, that film too, on the sagittal plane
(<i>lateral</i> (X2BR lateral film), shown in the Yellow view). Earlier results are kept; an existing segmentation is
replaced only when you pick it as <i>Segmentation</i>, and X2BR asks first if that would lose edits.</li>
<li><b>Edit</b> the bones in the Segment Editor module (the segmentation keeps its 3D grid).</li>
<li><b>Export</b>: Segmentations module, <i>Export to files</i> (STL or OBJ meshes); File / Save Data
(<i>.seg.nrrd</i>); Data module, right-click the segmentation, <i>Export to DICOM</i> (DICOM SEG, needs the
QuantitativeReporting extension).</li>
</ol>
<p>PNG and JPEG files carry no pixel spacing: X2BR then estimates it from the bones the detector finds on
the film (an adult's chest is assumed; on 24 simulated films the error was 7.5 % on average, 17.2 % at
most) and the status line says which spacing it used, from where and how sure. If you know the detector pixel spacing, set it first in the Volumes module
(Volume Information, Image Spacing): it is then used as given, never replaced by the estimate.
DICOM CR/DX files give the spacing, distances and view; a spacing set in the Volumes module wins over
the file's.</p>
<p>The first run installs the Python packages X2BR needs (PyTorch through the PyTorch extension; the
and the bone detector, which checks every film and estimates its scale); Slicer's own packages (numpy, SimpleITK, pydicom...)
are never replaced. After that everything runs offline: the network weights are bundled.</p>
<p><b>Refinement</b> (X2BR): detects the bones on the film (through the detector's test-time passes, as
<tt>x2br reconstruct --refine</tt> does by default), fits a skeleton template to them and
registers it onto the network's bones: one smooth closed piece per bone, at some cost in overlap with
the true bone (see the README's trade-off table).</p>
<p>Method: <a href="{paper}">X2BR: High-Fidelity 3D Bone Reconstruction from a Planar X-Ray Image with
Hybrid Neural Implicit Methods</a> (Guven, Ugurdag, Ates, 2025). Research software, not a medical device.</p>
""").format(paper=PAPER_URL)
        self.parent.acknowledgementText = _("""
X2BR follows the method of Guven, Ugurdag and Ates (arXiv 2504.08675). The network was trained on
virtual patients derived from a public chest CT with TotalSegmentator labels. Built on 3D Slicer,
PyTorch, timm and the SlicerPyTorch extension.
""")
        iconPath = os.path.join(MODULE_ROOT, "Resources", "Icons", "X2BR.png")
        if os.path.isfile(iconPath):  # found by Slicer once built; in a source checkout it is in ../Resources
            self.parent.icon = qt.QIcon(iconPath)
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Sample data
#


def sampleRadiographPath():
    return os.path.join(MODULE_ROOT, "Resources", "SampleData", "sample_radiograph.dcm")


def registerSampleData():
    """Register the bundled sample radiograph in the Sample Data module (a local file: nothing is
    downloaded). Returns True if registered."""
    import SampleData

    path = sampleRadiographPath()
    if not os.path.isfile(path):
        logging.info(f"X2BR: no bundled sample radiograph at {path}; the Sample Data entry is not registered")
        return False
    import hashlib
    import pathlib

    with open(path, "rb") as f:
        checksum = "SHA256:" + hashlib.sha256(f.read()).hexdigest()
    thumbnail = os.path.join(MODULE_ROOT, "Resources", "Icons", "X2BR.png")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="X2BR",
        sampleName=SAMPLE_NAME,
        thumbnailFileName=thumbnail if os.path.isfile(thumbnail) else None,
        uris=pathlib.Path(path).as_uri(),
        fileNames="X2BR_sample_radiograph.dcm",
        checksums=checksum,
        nodeNames="X2BR chest radiograph",
        loadFileType="VolumeFile",  # (loadFileTypes in newer Slicer; this spelling works in both)
    )
    return True


#
# Parameter node
#


@parameterNodeWrapper
class X2BRParameterNode:
    """
    inputVolume - the chest radiograph (single-slice scalar or RGB volume).
    lateralVolume - optional: the lateral film of the same study (needs two-view weights).
    quality - voxel size of the result: fast 3 mm, default 2 mm, high 1 mm.
    device - auto, cpu or cuda.
    refine - the X2BR refinement (detection, skeleton template, geodesic CPD) after X2B.
    outputSegmentation - None (default): each run makes a new segmentation; a chosen one has its
        segments replaced (X2BR asks first when that loses edits).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    lateralVolume: vtkMRMLScalarVolumeNode
    quality: Annotated[str, Choice(list(slicer_process.QUALITIES))] = "default"
    device: Annotated[str, Choice(list(slicer_process.DEVICES))] = "auto"
    refine: bool = False
    outputSegmentation: vtkMRMLSegmentationNode


#
# Widget
#


class X2BRWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def resourcePath(self, filename):
        return os.path.join(MODULE_ROOT, "Resources", filename)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/X2BR.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = X2BRLogic()
        self.logic.logCallback = self._setStatus
        self.ui.progressBar.hide()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.logic:
            self.logic.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        if self.logic:
            self.logic.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode and not firstVolumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        running = self.logic is not None and self.logic.isRunning
        self.ui.inputsCollapsibleButton.enabled = not running
        self.ui.outputsCollapsibleButton.enabled = not running
        if running:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the reconstruction (kills its process).")
            self.ui.applyButton.enabled = True
        elif self._parameterNode and self._parameterNode.inputVolume:
            self.ui.applyButton.text = _("Reconstruct")
            self.ui.applyButton.toolTip = _("Reconstruct the bones from the radiograph.")
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.text = _("Reconstruct")
            self.ui.applyButton.toolTip = _("Select a radiograph first.")
            self.ui.applyButton.enabled = False

    def onApplyButton(self) -> None:
        if self.logic.isRunning:
            self.logic.cancel()
            return
        p = self._parameterNode
        self.ui.logTextEdit.clear()
        try:
            self.logic.checkInput(p.inputVolume)
            if p.lateralVolume:
                self.logic.checkLateral(p.inputVolume, p.lateralVolume)
        except ValueError as e:
            slicer.util.errorDisplay(str(e), windowTitle=_("X2BR"))
            return
        choice = self.logic.outputChoice(p.inputVolume, p.outputSegmentation)
        if choice.question and not slicer.util.confirmOkCancelDisplay(choice.question, _("X2BR: replace segments?")):
            return
        try:
            self.logic.setupPythonRequirements(refine=p.refine)
        except InstallError as e:
            if not e.restartRequired:
                self._setStatus(str(e))
                slicer.util.errorDisplay(str(e), windowTitle=_("X2BR"))
                return
            if slicer.util.confirmOkCancelDisplay(
                    _("The Python packages X2BR needs are installed. Restart 3D Slicer now? (recommended: "
                      "Slicer had already loaded older versions of some of them)"),
                    _("Restart recommended"), detailedText=str(e)):
                slicer.util.restart()
                return
        except Exception as e:
            logging.exception("X2BR: installing Python packages failed")
            slicer.util.errorDisplay(_("Failed to install the Python packages X2BR needs: {error}").format(error=e),
                                     windowTitle=_("X2BR"))
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the reconstruction."), waitCursor=True):
            self.logic.startReconstruction(p.inputVolume, p.outputSegmentation, p.quality, p.device,
                                           refine=p.refine, replaceConfirmed=True, progressCallback=self._onProgress,
                                           completedCallback=self._onCompleted, lateralVolume=p.lateralVolume)
            self.ui.progressBar.value = 0
            self.ui.progressBar.show()
        self._updateButtons()

    def _setStatus(self, text) -> None:
        self.ui.statusLabel.text = text

    def _onProgress(self, fraction, message, logLine=None) -> None:
        if fraction is not None:
            self.ui.progressBar.value = int(round(100 * fraction))
        if message:
            self._setStatus(message)
        if logLine is not None:
            self.ui.logTextEdit.appendPlainText(logLine)

    def _onCompleted(self, success, message) -> None:
        self.ui.progressBar.value = 100 if success else 0
        self.ui.progressBar.setVisible(success)
        self._setStatus(message)
        self._updateButtons()  # the output stays as chosen: 'Create new' keeps making new results


#
# Logic
#


class InstallError(RuntimeError):
    def __init__(self, message, restartRequired=False):
        super().__init__(message)
        self.restartRequired = restartRequired


class X2BRLogic(ScriptedLoadableModuleLogic):
    """Runs ``x2br reconstruct`` out of process and loads its result; usable without the widget
    (``process`` waits, ``startReconstruction`` returns at once and reports through callbacks)."""

    POLL_INTERVAL_MS = 200

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.keepTemporaryFiles = False
        self.logCallback = None  # called with status text outside a run (package installation)
        self.lastSegmentation = None
        self.lastFilm = None
        self.lastLateralFilm = None
        self._job = None
        self._task = None
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)

    def getParameterNode(self):
        return X2BRParameterNode(super().getParameterNode())

    @property
    def isRunning(self) -> bool:
        return self._job is not None and not self._job.finished

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def checkInput(volumeNode) -> dict:
        """Raise ValueError (X2BRLib InputError) with a message for the user if the volume is not one
        2D radiograph (a CT is refused; RGB is converted, with a warning)."""
        from X2BRLib import scene

        return scene.check_radiograph_volume(volumeNode)

    @staticmethod
    def checkLateral(inputVolume, lateralVolume) -> dict:
        """Raise ValueError unless the lateral film is one 2D radiograph other than the radiograph
        (``X2BRLib.scene_input.check_lateral_volume``); the command checks the pair itself."""
        from X2BRLib import scene_input

        return scene_input.check_lateral_volume(inputVolume, lateralVolume)

    @staticmethod
    def radiographFile(volumeNode, folder):
        """The file to give the command (``X2BRLib.scene_input.radiograph_input``: the volume as the user
        sees it wins over its file; a corrected spacing wins over the DICOM file's). Returns a FilmInput."""
        from X2BRLib import scene_input

        dicomFile = None
        uids = (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split()
        if len(uids) == 1 and getattr(slicer, "dicomDatabase", None):
            dicomFile = slicer.dicomDatabase.fileForInstance(uids[0]) or None
        return scene_input.radiograph_input(volumeNode, folder, dicom_file=dicomFile)

    @staticmethod
    def outputChoice(inputVolume, outputSegmentation=None):
        """Where the result goes (``X2BRLib.scene_results.choose_output``): a new segmentation unless
        one was chosen; ``question`` says what replacing the chosen one would lose."""
        from X2BRLib import scene_results

        return scene_results.choose_output(slicer.mrmlScene, inputVolume.GetName(), outputSegmentation)

    # ------------------------------------------------------------------ dependencies
    def setupPythonRequirements(self, refine=False, askConfirmation=True) -> None:
        """Install what the reconstruction process needs, at first use (``X2BRLib.slicer_deps.plan``
        decides): torch through the PyTorch extension when absent; X2BR's packages (ultralytics included:
        the detector checks every film) through ``slicer.pydeps.pip_ensure`` with Slicer's own packages skipped and pinned;
        never a replacement of Slicer's numpy, vtk, SimpleITK, pydicom, requests... or of an installed
        torch. Raises InstallError (restartRequired when Slicer must restart)."""
        from X2BRLib import slicer_deps

        plan = slicer_deps.plan(refine)
        if plan.problems:
            raise InstallError("\n".join(plan.problems))
        if plan.install_torch:
            try:
                import PyTorchUtils
            except ModuleNotFoundError:
                raise InstallError(_("X2BR needs the PyTorch extension: install 'PyTorch' from the Extensions "
                                     "Manager, restart Slicer, then click Reconstruct again."))
            self._log(_("Installing PyTorch (this can take several minutes)..."))
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=askConfirmation, torchVersionRequirement=slicer_deps.TORCH_REQUIREMENT,
                torchvisionVersionRequirement=slicer_deps.TORCHVISION_REQUIREMENT)
            if torch is None:
                raise InstallError(_("PyTorch was not installed; X2BR cannot run without it."))
            plan = slicer_deps.plan(refine)
            if plan.problems:
                raise InstallError("\n".join(plan.problems))
        if not plan.install:
            return
        constraints = os.path.join(slicer.app.temporaryPath, "X2BR-constraints.txt")
        with open(constraints, "w") as f:
            f.write("\n".join(plan.pins) + "\n")
        self._log(_("Installing {packages}...").format(packages=", ".join(plan.install)))
        try:
            import slicer.pydeps as pydeps  # Slicer 5.11 and later
        except ImportError:
            pydeps = None
        if pydeps is not None and hasattr(pydeps, "pip_ensure"):
            from packaging.requirements import Requirement

            try:  # a progress dialog; Slicer stays responsive; it offers a restart when needed
                pydeps.pip_ensure([Requirement(r) for r in plan.install], constraints=constraints,
                                  skip_packages=list(plan.skip), prompt_install=askConfirmation, requester="X2BR",
                                  skip_in_testing=False)
            except RuntimeError as e:
                raise InstallError(_("installation cancelled: {error}").format(error=e))
            return
        # Older Slicer: one pip run under constraints that hold Slicer's own packages where they are.
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                _("X2BR needs some Python packages. Install them now? (network needed once, a few minutes; "
                  "Slicer's own packages are kept)"), _("X2BR: install Python packages"),
                detailedText="\n".join(plan.install)):
            raise InstallError(_("installation cancelled"))
        slicer.util.pip_install(["-c", constraints] + list(plan.install))
        stale = [r for r in plan.install if slicer_deps.import_name(r) in sys.modules]
        if stale:  # the reconstruction process sees the new versions; this Slicer session does not
            raise InstallError(_("updated packages already loaded in Slicer: {packages}").format(
                packages=", ".join(stale)), restartRequired=True)

    # ------------------------------------------------------------------ run
    def startReconstruction(self, inputVolume, outputSegmentation=None, quality="default", device="auto",
                            refine=False, replaceConfirmed=False, progressCallback=None, completedCallback=None,
                            lateralVolume=None) -> None:
        """Start ``x2br reconstruct`` on the volume; returns at once. progressCallback(fraction, message,
        logLine); completedCallback(success, message). The result goes into a new segmentation, or into
        outputSegmentation when given (refused with ValueError when that would lose edits, unless
        replaceConfirmed), with a placed copy of the film (and of the lateral); see lastSegmentation / lastFilm /
        lastLateralFilm.
        lateralVolume: optional lateral film of the same study, passed as ``--lateral`` (its file chosen
        by the same rule as the radiograph's)."""
        if self.isRunning:
            raise RuntimeError(_("a reconstruction is already running"))
        info = self.checkInput(inputVolume)
        if lateralVolume is not None:
            self.checkLateral(inputVolume, lateralVolume)
        choice = self.outputChoice(inputVolume, outputSegmentation)
        if choice.question and not replaceConfirmed:
            raise ValueError(choice.question)
        tempDir = tempfile.mkdtemp(prefix="X2BR-", dir=slicer.app.temporaryPath)
        filmInput = self.radiographFile(inputVolume, tempDir)
        radiograph = filmInput.path
        outDir = os.path.join(tempDir, "out")
        python = shutil.which("PythonSlicer")
        env = slicer_process.subprocess_environment(slicer.util.startupEnvironment() if python else None)
        lateralInput = None
        if lateralVolume is not None:
            os.makedirs(os.path.join(tempDir, "lateral"))
            lateralInput = self.radiographFile(lateralVolume, os.path.join(tempDir, "lateral"))
        command = slicer_process.reconstruct_command(
            python or sys.executable, radiograph, outDir, device, quality, refine=refine,
            pixel_spacing=filmInput.pixel_spacing_mm, lateral=lateralInput.path if lateralInput else None,
            lateral_pixel_spacing=lateralInput.pixel_spacing_mm if lateralInput else None)
        logging.info("X2BR: " + " ".join(command))
        self._task = dict(inputVolume=inputVolume, lateralVolume=lateralVolume, choice=choice,
                          radiograph=radiograph, tempDir=tempDir, outDir=outDir, progress=progressCallback,
                          completed=completedCallback,
                          warnings=list(info["warnings"]) + ([filmInput.note] if filmInput.note else [])
                          + ([f"lateral film: {lateralInput.note}"] if lateralInput and lateralInput.note else []))
        self._job = slicer_process.ReconstructionProcess(command, env=env).start()
        self._timer.start()
        self._poll()

    def cancel(self) -> None:
        if self.isRunning:
            self._job.cancel()

    def process(self, inputVolume, outputSegmentation=None, quality="default", device="auto", timeout=None,
                refine=False, replaceConfirmed=False, lateralVolume=None):
        """Reconstruct and wait (scripts, self-test). Returns the segmentation node; raises on failure."""
        result = {}
        self.startReconstruction(inputVolume, outputSegmentation, quality, device, refine=refine,
                                 replaceConfirmed=replaceConfirmed, lateralVolume=lateralVolume,
                                 completedCallback=lambda ok, msg: result.update(ok=ok, msg=msg))
        end = None if timeout is None else time.monotonic() + timeout
        while self._task is not None:
            if end is not None and time.monotonic() > end:
                self.cancel()
            slicer.app.processEvents()
            self._poll()
            time.sleep(0.05)
        if not result.get("ok"):
            raise RuntimeError(result.get("msg", "reconstruction failed"))
        return self.lastSegmentation

    def _report(self, fraction, message, logLine=None) -> None:
        if self._task and self._task["progress"]:
            self._task["progress"](fraction, message, logLine)

    def _log(self, text) -> None:
        logging.info("X2BR: " + text)
        if self._task is None and self.logCallback:
            self.logCallback(text)
            slicer.app.processEvents()
        self._report(None, text)

    def _poll(self) -> None:
        if self._job is None or self._task is None:
            self._timer.stop()
            return
        for event in self._job.poll():
            if event.kind == "warning":
                self._task["warnings"].append(event.message)
            if event.kind == "stage":
                self._task["stage"] = event.message
            self._report(event.progress, event.message if event.kind in ("stage", "result", "error") else None,
                         event.line or None)
        if self._job.finished:
            self._timer.stop()
            self._finish()
        elif self._task.get("stage"):
            self._report(None, f"{self._task['stage']} ({self._job.elapsed_s:.0f} s)")

    def _finish(self) -> None:
        job, task = self._job, self._task
        success, message = False, job.failure_message()
        try:
            if job.returncode == 0 and not job.cancelled:
                self._report(slicer_process.STAGE_PROGRESS["loading"], _("Loading the bones into the scene..."))
                self._loadResults(task)
                summary = job.result() or {}
                done = (summary.get("reconstructed") or [{}])[0]
                message = _("{n} bones reconstructed in {s} s.").format(n=done.get("bones_found", "?"),
                                                                        s=done.get("seconds", "?"))
                if task["warnings"]:
                    message += "\n" + "\n".join(_("Note: {w}").format(w=w) for w in task["warnings"])
                success = True
        except Exception as e:  # loading failed: say so, keep the files for inspection
            logging.exception("X2BR: loading the result failed")
            message = _("Loading the result failed: {error}").format(error=e)
            self.keepTemporaryFiles = True
        finally:
            self._job, self._task = None, None
            if not self.keepTemporaryFiles:
                shutil.rmtree(task["tempDir"], ignore_errors=True)
            else:
                logging.info(f"X2BR: temporary files kept in {task['tempDir']}")
        logging.info("X2BR: " + message)
        if task["completed"]:
            task["completed"](success, message)

    def _loadResults(self, task) -> None:
        from X2BRLib import scene_results

        lateral = task.get("lateralVolume")
        film, segmentation, notes = scene_results.load_result(
            slicer.mrmlScene, os.path.join(task["outDir"], "bones.seg.nrrd"), task["radiograph"],
            task["inputVolume"].GetName(), task["choice"], meshes_dir=os.path.join(task["outDir"], "meshes"),
            report=os.path.join(task["outDir"], "report.json"),
            lateral_name=lateral.GetName() if lateral is not None else None)
        for note in notes:
            logging.warning("X2BR: " + note)
        task["warnings"].extend(notes)
        self.lastFilm, self.lastSegmentation = film, segmentation
        self.lastLateralFilm = scene_results.lateral_film_of(segmentation)
        if slicer.app.layoutManager() is not None:
            self.showResults(film, segmentation, self.lastLateralFilm)

    @staticmethod
    def showResults(film, segmentation, lateralFilm=None) -> None:
        """Film in the slice views (the coronal view through its plane; a lateral film in the Yellow,
        sagittal, view through its own), bones in 2D and 3D."""
        if film is not None:
            slicer.util.setSliceViewerLayers(background=film, fit=True)
            m = vtk.vtkMatrix4x4()
            film.GetIJKToRASMatrix(m)
            dims = film.GetImageData().GetDimensions()
            centre = m.MultiplyPoint(((dims[0] - 1) / 2, (dims[1] - 1) / 2, 0, 1))[:3]
            for name in ("Red", "Yellow", "Green"):
                widget = slicer.app.layoutManager().sliceWidget(name)
                if widget:
                    widget.mrmlSliceNode().JumpSliceByCentering(*centre)
        yellow = slicer.app.layoutManager().sliceWidget("Yellow") if lateralFilm is not None else None
        if yellow:  # the lateral's plane is sagittal through the same isocentre: the film's centre lies on it
            yellow.mrmlSliceCompositeNode().SetBackgroundVolumeID(lateralFilm.GetID())
            yellow.sliceLogic().FitSliceToAll()
        segmentation.SetDisplayVisibility(True)
        threeD = slicer.app.layoutManager().threeDWidget(0)
        if threeD:
            threeD.threeDView().resetFocalPoint()


#
# Test
#


class X2BRTest(ScriptedLoadableModuleTest):
    """Inside Slicer: load the bundled sample radiograph, reconstruct it (CPU, fast), check the bones."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_CTIsRefused()
        self.setUp()
        self.test_SampleRadiograph()

    def test_CTIsRefused(self):
        ct = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
        image = vtk.vtkImageData()
        image.SetDimensions(96, 96, 30)
        image.AllocateScalars(vtk.VTK_SHORT, 1)
        ct.SetAndObserveImageData(image)
        with self.assertRaisesRegex(ValueError, "3D volume"):
            X2BRLogic.checkInput(ct)

    def test_SampleRadiograph(self):
        import SampleData

        from X2BRLib import anatomy, scene

        self.delayDisplay("Loading the sample radiograph")
        self.assertTrue(registerSampleData(), "the bundled sample radiograph is missing")
        volume = SampleData.downloadSample(SAMPLE_NAME)
        self.assertIsNotNone(volume)
        self.delayDisplay("Reconstructing (CPU, fast)")
        logic = X2BRLogic()
        logic.setupPythonRequirements(askConfirmation=False)
        segmentation = logic.process(volume, quality="fast", device="cpu", timeout=600)
        ids = [segmentation.GetSegmentation().GetNthSegmentID(i)
               for i in range(segmentation.GetSegmentation().GetNumberOfSegments())]
        self.assertGreaterEqual(len(ids), 30)
        for segmentId in ids:
            bone = anatomy.bone(segmentId)
            self.assertEqual(segmentation.GetSegmentation().GetSegment(segmentId).GetName(), bone.display_name)
        self.assertTrue(scene.all_surfaces_non_empty(segmentation))
        self.assertIsNotNone(logic.lastFilm)

        self.delayDisplay("A second run makes a new segmentation and keeps the first")
        from X2BRLib import scene_results

        first = scene_results.segmentation_fingerprint(segmentation)
        second = logic.process(volume, quality="fast", device="cpu", timeout=600)
        self.assertIsNot(second, segmentation)
        self.assertNotEqual(second.GetName(), segmentation.GetName())
        self.assertEqual(scene_results.segmentation_fingerprint(segmentation), first)
        self.delayDisplay("Test passed")
