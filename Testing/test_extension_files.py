"""The 3D Slicer extension's files, checked without Slicer: the Qt Designer UI, the CMake
lists against the tree, the Extensions Index description, the module file's structure.

X2BR/X2BR.py imports Slicer's GUI (qt, slicer.util...), so it is read as text / AST here,
never imported.
"""
from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UI = REPO / "Resources" / "UI" / "X2BR.ui"
MODULE = REPO / "X2BR" / "X2BR.py"
MODULE_CMAKE = REPO / "X2BR" / "CMakeLists.txt"
TOP_CMAKE = REPO / "CMakeLists.txt"
INDEX_JSON = REPO / "X2BR.json"
# Properties of the Extensions Index catalog entry schema v1.0.2 (additionalProperties: false).
INDEX_KEYS = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
              "dicom_support_rule", "build_subdirectory", "enabled", "tier"}
INDEX_REQUIRED = {"$schema", "category", "scm_url"}


# ---------------------------------------------------------------------- helpers
def _cmake_text(path: Path) -> str:
    """CMake source without comments (a '#' outside quotes starts one)."""
    out = []
    for line in path.read_text().splitlines():
        quoted = False
        for i, ch in enumerate(line):
            if ch == '"':
                quoted = not quoted
            elif ch == "#" and not quoted:
                line = line[:i]
                break
        out.append(line)
    return "\n".join(out)


def _cmake_calls(text: str, command: str) -> list[list[str]]:
    """Arguments of every call of a CMake command (quoted strings kept as one argument)."""
    calls = []
    for m in re.finditer(rf"\b{command}\s*\((.*?)\)", text, re.S | re.I):
        calls.append([a[1:-1] if a.startswith('"') else a for a in re.findall(r'"[^"]*"|[^\s()]+', m.group(1))])
    return calls


def _cmake_sets(text: str) -> dict[str, list[str]]:
    return {args[0]: args[1:] for args in _cmake_calls(text, "set") if args}


def _expand(values: list[str], variables: dict[str, list[str]]) -> list[str]:
    def sub(v):
        return re.sub(r"\$\{(\w+)\}", lambda m: " ".join(variables.get(m.group(1), [m.group(0)])), v)

    return [sub(v) for v in values]


def _tree(folder: Path, pattern: str = "*") -> set[str]:
    return {p.relative_to(REPO).as_posix() for p in folder.rglob(pattern)
            if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def ui_root():
    return ET.parse(UI).getroot()


@pytest.fixture(scope="module")
def module_ast():
    return ast.parse(MODULE.read_text(), filename=str(MODULE))


# ---------------------------------------------------------------------- the .ui file
def test_the_ui_file_is_qt_designer_xml_with_unique_object_names(ui_root):
    assert ui_root.tag == "ui" and ui_root.get("version") == "4.0"
    assert ui_root.findtext("class") == "X2BR"
    top = ui_root.find("widget")
    assert (top.get("class"), top.get("name")) == ("qMRMLWidget", "X2BR")
    names = [w.get("name") for w in ui_root.iter("widget")]
    names += [x.get("name") for tag in ("layout", "spacer") for x in ui_root.iter(tag)]
    assert all(names), "every widget, layout and spacer needs an objectName"
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"objectNames used twice: {duplicates}"
    declared = {c.findtext("class") for c in ui_root.iter("customwidget")}
    used = {w.get("class") for w in ui_root.iter("widget")}
    assert {c for c in used if not c.startswith("Q")} <= declared, "custom widgets must be declared"


def test_every_node_selector_gets_the_scene(ui_root):
    selectors = {w.get("name") for w in ui_root.iter("widget") if w.get("class") == "qMRMLNodeComboBox"}
    wired = {c.findtext("receiver") for c in ui_root.iter("connection")
             if c.findtext("sender") == "X2BR" and c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
             and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert selectors == {"inputVolumeSelector", "lateralVolumeSelector", "outputSegmentationSelector"} \
        and selectors <= wired


def _widget(ui_root, name):
    return next(w for w in ui_root.iter("widget") if w.get("name") == name)


def _prop(widget, name):
    p = next((p for p in widget.findall("property") if p.get("name") == name), None)
    if p is None:
        return None
    return [s.text for s in p.iter("string")] if p.find("stringlist") is not None else "".join(p.itertext()).strip()


def test_the_widgets_the_module_uses_exist_and_are_bound_to_its_parameters(ui_root, module_ast):
    source = MODULE.read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    names = {w.get("name") for w in ui_root.iter("widget")}
    assert used <= names, f"X2BR.py uses widgets the .ui lacks: {sorted(used - names)}"
    cls = next(n for n in module_ast.body if isinstance(n, ast.ClassDef) and n.name == "X2BRParameterNode")
    assert any(getattr(d, "id", None) == "parameterNodeWrapper" for d in cls.decorator_list)
    parameters = {s.target.id for s in cls.body if isinstance(s, ast.AnnAssign)}
    assert parameters == {"inputVolume", "lateralVolume", "quality", "device", "refine", "outputSegmentation"}
    bound = {_prop(w, "SlicerParameterName") for w in ui_root.iter("widget")} - {None}
    assert bound == parameters
    assert _prop(_widget(ui_root, "inputVolumeSelector"), "nodeTypes") == ["vtkMRMLScalarVolumeNode"]
    assert "vtkMRMLLabelMapVolumeNode" in _prop(_widget(ui_root, "inputVolumeSelector"), "hideChildNodeTypes")
    assert _prop(_widget(ui_root, "lateralVolumeSelector"), "nodeTypes") == ["vtkMRMLScalarVolumeNode"]
    assert _prop(_widget(ui_root, "lateralVolumeSelector"), "noneEnabled") == "true"  # optional
    assert _prop(_widget(ui_root, "outputSegmentationSelector"), "nodeTypes") == ["vtkMRMLSegmentationNode"]
    refine = _widget(ui_root, "refineCheckBox")
    assert _prop(refine, "enabled") is None and _prop(refine, "checked") == "false"  # offered, off by default
    assert "cpd" in _prop(refine, "toolTip").lower()
    assert _prop(_widget(ui_root, "applyButton"), "text") == "Reconstruct"


def _uic() -> str | None:
    here = Path(sys.executable).parent / "pyside6-uic"
    return str(here) if here.exists() else shutil.which("pyside6-uic")


def test_the_ui_file_compiles_with_qt_uic(tmp_path):
    uic = _uic()
    if uic is None:
        pytest.skip("pyside6-uic not installed (requirements-test.txt installs PySide6-Essentials)")
    out = tmp_path / "ui_x2br.py"
    run = subprocess.run([uic, str(UI), "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    assert "class Ui_X2BR" in text and "qMRMLNodeComboBox" in text
    compile(text, str(out), "exec")  # the generated code is valid Python


# ---------------------------------------------------------------------- CMake
def test_the_module_cmake_lists_every_file_the_module_needs():
    text = _cmake_text(MODULE_CMAKE)
    sets = _cmake_sets(text)
    variables = {k: _expand(v, sets) for k, v in sets.items()}
    scripts = set(variables["MODULE_PYTHON_SCRIPTS"])
    library = set(variables["X2BRLIB_PYTHON_SCRIPTS"])
    resources = set(variables["MODULE_PYTHON_RESOURCES"])

    assert scripts == {"X2BR.py"} and (MODULE_CMAKE.parent / "X2BR.py").is_file()
    tree = _tree(REPO / "X2BRLib", "*.py")
    assert not tree - library, f"X2BRLib files missing from X2BR/CMakeLists.txt: {sorted(tree - library)}"
    assert not library - tree, f"listed but not in the tree: {sorted(library - tree)}"
    tree = _tree(REPO / "Resources")
    assert not tree - resources, f"Resources missing from X2BR/CMakeLists.txt: {sorted(tree - resources)}"
    assert not resources - tree, f"listed but not in the tree: {sorted(resources - tree)}"
    for needed in ("Resources/Icons/X2BR.png", "Resources/UI/X2BR.ui", "Resources/Models/x2b/model.pt",
                   "Resources/Models/x2b/model.json", "Resources/SampleData/sample_radiograph.dcm"):
        assert needed in resources

    (build,) = _cmake_calls(text, "slicerMacroBuildScriptedModule")
    assert build[:2] == ["NAME", "${MODULE_NAME}"] and "${MODULE_PYTHON_SCRIPTS}" in build
    (copy,) = _cmake_calls(text, "ctkMacroCompilePythonScript")
    kw = {copy[i]: copy[i + 1] for i in range(len(copy) - 1) if copy[i].isupper() and copy[i] != "NO_INSTALL_SUBDIR"}
    assert kw["SCRIPTS"] == "${X2BRLIB_PYTHON_SCRIPTS}" and kw["RESOURCES"] == "${MODULE_PYTHON_RESOURCES}"
    assert kw["SOURCE_DIR"] == "${X2BR_SOURCE_ROOT}" and "NO_INSTALL_SUBDIR" in copy
    assert kw["DESTINATION_DIR"] == "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}"
    assert kw["INSTALL_DIR"] == "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}"
    root = re.search(r'get_filename_component\(\s*X2BR_SOURCE_ROOT\s+"\$\{CMAKE_CURRENT_SOURCE_DIR\}/\.\."\s+ABSOLUTE',
                     text)
    assert root, "X2BR_SOURCE_ROOT must be the repository top (X2BR/..)"
    assert re.search(r"if\s*\(\s*BUILD_TESTING\s*\)\s*slicer_add_python_unittest\s*\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py\s*\)"
                     r"\s*endif", text)
    assert not any(".." in f for f in scripts | library | resources), "paths relative to the source root"


def test_the_top_level_cmake_describes_the_extension():
    text = _cmake_text(TOP_CMAKE)
    sets = _cmake_sets(text)
    meta = {k: " ".join(_expand(v, sets)) for k, v in sets.items()}
    assert re.search(r"cmake_minimum_required\s*\(", text) and re.search(r"project\s*\(\s*X2BR\s*\)", text)
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert meta.get(key), key
    assert meta["EXTENSION_CATEGORY"] == "Segmentation" and meta["EXTENSION_DEPENDS"] == "PyTorch"
    raw = meta["X2BR_RAW_URL"]
    assert meta["EXTENSION_HOMEPAGE"].startswith(meta["X2BR_REPOSITORY"])
    for url in [meta["EXTENSION_ICONURL"]] + meta["EXTENSION_SCREENSHOTURLS"].split():
        assert url.startswith(raw + "/") and (REPO / url[len(raw) + 1:]).is_file(), f"{url}: not a file of this repo"
    assert (REPO / "LICENSE.txt").is_file()
    order = [r"find_package\s*\(\s*Slicer\s+REQUIRED\s*\)", r"include\s*\(\s*\$\{Slicer_USE_FILE\}\s*\)",
             r"add_subdirectory\s*\(\s*X2BR\s*\)", r"include\s*\(\s*\$\{Slicer_EXTENSION_GENERATE_CONFIG\}\s*\)",
             r"include\s*\(\s*\$\{Slicer_EXTENSION_CPACK\}\s*\)"]
    positions = [re.search(p, text).start() for p in order]
    assert positions == sorted(positions)


def test_the_extensions_index_description_matches_the_cmake_metadata():
    entry = json.loads(INDEX_JSON.read_text())
    assert set(entry) <= INDEX_KEYS and INDEX_REQUIRED <= set(entry)
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    sets = _cmake_sets(_cmake_text(TOP_CMAKE))
    assert entry["category"] == " ".join(sets["EXTENSION_CATEGORY"])
    assert entry["build_dependencies"] == " ".join(sets["EXTENSION_DEPENDS"]).split()
    assert entry["scm_url"] == " ".join(sets["X2BR_REPOSITORY"])
    assert entry.get("build_subdirectory", ".") == "." and 1 <= entry.get("tier", 1) <= 5


# ---------------------------------------------------------------------- the module file
def test_the_module_file_follows_slicer_conventions(module_ast):
    classes = {n.name: n for n in module_ast.body if isinstance(n, ast.ClassDef)}
    bases = {name: [getattr(b, "id", None) for b in c.bases] for name, c in classes.items()}
    assert "ScriptedLoadableModule" in bases["X2BR"]
    assert "ScriptedLoadableModuleWidget" in bases["X2BRWidget"]
    assert "ScriptedLoadableModuleLogic" in bases["X2BRLogic"]
    assert "ScriptedLoadableModuleTest" in bases["X2BRTest"]
    source = MODULE.read_text()
    assert "arxiv.org/abs/2504.08675" in source and '"Segmentation")]' in source
    assert 'loadUI(self.resourcePath("UI/X2BR.ui"))' in source
    top_imports = {a.name.split(".")[0] for n in module_ast.body if isinstance(n, (ast.Import, ast.ImportFrom))
                   for a in (n.names if isinstance(n, ast.Import) else [ast.alias(n.module or "")])}
    assert not top_imports & {"torch", "numpy", "timm", "skimage", "scipy"}, "heavy imports at first use only"
    assert "registerCustomSampleDataSource" in source
