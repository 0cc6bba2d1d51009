"""``x2br reconstruct`` out of process, for the Slicer module (Qt-free, testable headless).

The Slicer module never imports torch: it runs the same command a user can run,

    <python> -m X2BRLib.cli reconstruct <radiograph> -o <folder> --device D --quality Q --overwrite [--no-meshes | --refine]
        [--lateral <lateral film> [--lateral-pixel-spacing MM]]

with Slicer's Python (``PythonSlicer``), reads its output lines as they come
(without blocking: a reader thread fills a queue that the caller drains from a
timer), and loads ``<folder>/bones.seg.nrrd`` when the process succeeds.
Cancel kills the whole process tree (``PythonSlicer`` is a launcher that starts
the real interpreter as a child).

Lines the command prints (stdout and stderr merged) and what they mean here:

* ``x2br: reconstructing <file>``: the model is loaded, the reconstruction runs;
* ``x2br: progress <fraction> <message>``: a stage finished (fraction of this film's work);
* ``x2br: error: <message>``: the input was refused (exit code 2), shown as is;
* ``x2br: warning: <message>`` (and, from older versions, ``<file>:<line>: <Name>Warning:
  <message>``): an assumption made while reading the film (e.g. no pixel spacing in a
  PNG), shown to the user;
* one JSON object ``{"reconstructed": [...], "failed": [...]}``: the summary;
* anything else (tracebacks...): kept in the log.
"""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

QUALITIES = ("fast", "default", "high")
DEVICES = ("auto", "cpu", "cuda")

# Share of the progress bar reached at each stage.
STAGE_PROGRESS = {"starting": 0.05, "reconstructing": 0.2, "written": 0.9, "loading": 0.95, "done": 1.0}
_WARNING = re.compile(r"^(?P<where>.*?):\d+: (?P<category>\w*Warning): (?P<message>.*)$")


def library_root() -> Path:
    """The folder holding the ``X2BRLib`` package (the module's folder once Slicer installs it,
    the repository top in a checkout): the subprocess's working folder and PYTHONPATH entry."""
    return Path(__file__).resolve().parents[1]


def reconstruct_command(python: str, radiograph, output_dir, device: str = "auto", quality: str = "default",
                        weights=None, refine: bool = False, pixel_spacing=None, lateral=None,
                        lateral_pixel_spacing=None) -> list[str]:
    """The ``x2br reconstruct`` command line for one radiograph (list of arguments, no shell).

    Replaces what is in output_dir (a folder the caller owns). Without refine it skips the STL
    meshes (Slicer makes its surfaces from the labels); with refine it writes them: they are the
    refinement's closed meshes, loaded as the segments' closed surfaces.
    pixel_spacing: (column, row) mm the user set in Slicer (``FilmInput.pixel_spacing_mm``), passed
    as ``--pixel-spacing``: the report says source 'user' and no estimate replaces it.
    lateral: the lateral film of the same study (``--lateral``), its user-set spacing
    ``lateral_pixel_spacing`` (``--lateral-pixel-spacing``), both optional.
    """
    if quality not in QUALITIES:
        raise ValueError(f"quality must be one of {', '.join(QUALITIES)}, got {quality!r}")
    if device not in DEVICES and not re.fullmatch(r"cuda:\d+", device):
        raise ValueError(f"device must be one of {', '.join(DEVICES)} or cuda:N, got {device!r}")
    cmd = [str(python), "-m", "X2BRLib.cli", "reconstruct", str(radiograph), "-o", str(output_dir),
           "--device", device, "--quality", quality, "--overwrite", "--no-progress"]
    if not refine:
        cmd.append("--no-meshes")
    if weights:
        cmd += ["--weights", str(weights)]
    if refine:
        cmd.append("--refine")
    if pixel_spacing is not None:
        cmd += ["--pixel-spacing", _spacing_text(pixel_spacing)]
    if lateral is not None:
        cmd += ["--lateral", str(lateral)]
        if lateral_pixel_spacing is not None:
            cmd += ["--lateral-pixel-spacing", _spacing_text(lateral_pixel_spacing)]
    elif lateral_pixel_spacing is not None:
        raise ValueError("lateral_pixel_spacing needs a lateral film")
    return cmd


def _spacing_text(spacing) -> str:
    """(column, row) mm -> 'MM' (square pixels) or 'COLUMN,ROW'."""
    sx, sy = (float(v) for v in spacing)
    return f"{sx:.10g}" if sx == sy else f"{sx:.10g},{sy:.10g}"


def subprocess_environment(base: dict | None = None) -> dict:
    """Environment for the command: ``base`` (default: this process's) with the library root
    first on PYTHONPATH and unbuffered output, so progress lines arrive when printed."""
    env = dict(os.environ if base is None else base)
    root = str(library_root())
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


@dataclass
class Event:
    """One parsed output line. kind: 'stage' | 'warning' | 'error' | 'result' | 'log'."""

    kind: str
    message: str
    progress: float | None = None
    data: dict | None = None
    line: str = ""  # the output line as printed ('' for events the runner makes itself)


def parse_line(line: str) -> Event:
    """Classify one output line of ``x2br reconstruct`` (see the module docstring)."""
    event = _classify(line.rstrip("\r\n"))
    event.line = line.rstrip("\r\n")
    return event


def _classify(text: str) -> Event:
    if text.startswith("x2br: reconstructing"):
        return Event("stage", "Reconstructing the bones (X2B network and isosurface extraction)...",
                     STAGE_PROGRESS["reconstructing"])
    if text.startswith("x2br: progress "):
        parts = text[len("x2br: progress "):].split(" ", 1)
        try:
            fraction = min(1.0, max(0.0, float(parts[0])))
        except ValueError:
            return Event("log", text)
        lo, hi = STAGE_PROGRESS["reconstructing"], STAGE_PROGRESS["written"]
        return Event("stage", (parts[1] if len(parts) > 1 else "").capitalize() + "...", lo + (hi - lo) * fraction)
    if text.startswith("x2br: error:"):
        return Event("error", text[len("x2br: error:"):].strip())
    if text.startswith("x2br: interrupted"):
        return Event("error", "interrupted")
    if text.startswith("x2br: warning:"):
        return Event("warning", text[len("x2br: warning:"):].strip())
    m = _WARNING.match(text)
    if m:
        return Event("warning", m.group("message").strip())
    if text.startswith("{") and '"reconstructed"' in text:
        try:
            data = json.loads(text)
        except ValueError:
            return Event("log", text)
        ok = data.get("reconstructed") or []
        msg = (f"{ok[0].get('bones_found', '?')} bones reconstructed in {ok[0].get('seconds', '?')} s"
               if ok else "nothing reconstructed")
        return Event("result", msg, STAGE_PROGRESS["written"], data)
    return Event("log", text)


def kill_process_tree(proc: subprocess.Popen) -> None:
    """Kill a process started by :class:`ReconstructionProcess` and everything it started."""
    if proc.poll() is not None:
        return
    try:
        import psutil  # Slicer ships it; exact and cross-platform
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            parent = psutil.Process(proc.pid)
            children = parent.children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        for p in children:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
    if os.name == "nt":
        subprocess.run(["taskkill", "/PID", str(proc.pid), "/T", "/F"], capture_output=True, check=False)
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the whole group
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.kill()
    except OSError:
        pass
    proc.wait()


@dataclass
class ReconstructionProcess:
    """One running ``x2br reconstruct`` (lifecycle: start, poll until finished or cancel).

    command: from :func:`reconstruct_command`; env: from :func:`subprocess_environment`.
    Never blocks the caller: :meth:`poll` returns the events parsed since the last call.
    """

    command: list
    env: dict | None = None
    cwd: str | None = None
    proc: subprocess.Popen | None = None
    returncode: int | None = None
    cancelled: bool = False
    events: list = field(default_factory=list)
    log: list = field(default_factory=list)
    started_at: float = 0.0
    _seen: int = 0
    _queue: queue.Queue = field(default_factory=queue.Queue)
    _thread: threading.Thread | None = None

    def start(self) -> "ReconstructionProcess":
        kwargs = {}
        if os.name == "nt":
            info = subprocess.STARTUPINFO()
            info.dwFlags |= subprocess.STARTF_USESHOWWINDOW  # no console window
            kwargs.update(startupinfo=info, creationflags=subprocess.CREATE_NEW_PROCESS_GROUP)
        else:
            kwargs.update(start_new_session=True)  # a process group to kill as one
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace",
                                     bufsize=1, env=self.env, cwd=self.cwd or str(library_root()), **kwargs)
        self._thread = threading.Thread(target=self._read, name="x2br-output", daemon=True)
        self._thread.start()
        self.events.append(Event("stage", "Starting Python and loading the X2B model...", STAGE_PROGRESS["starting"]))
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line)
        self.proc.stdout.close()
        self._queue.put(None)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_at if self.started_at else 0.0

    @property
    def finished(self) -> bool:
        return self.returncode is not None

    def poll(self) -> list[Event]:
        """Events parsed since the last call (non-blocking); sets returncode once the process
        has exited and all its output is read."""
        while not self.finished:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self.returncode = self.proc.wait()
                break
            self.log.append(line.rstrip("\r\n"))
            self.events.append(parse_line(line))
        new, self._seen = self.events[self._seen:], len(self.events)
        return new

    def wait(self, timeout: float | None = None, interval: float = 0.1, callback=None) -> int | None:
        """Poll until the process ends (or timeout s); callback(events) after each poll."""
        end = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            events = self.poll()
            if callback and events:
                callback(events)
            if self.finished or (end is not None and time.monotonic() > end):
                break
            time.sleep(interval)
        return self.returncode

    def cancel(self) -> None:
        """Kill the process tree; the next poll reports it finished."""
        if self.proc is not None and self.proc.poll() is None:
            self.cancelled = True
            kill_process_tree(self.proc)

    def result(self) -> dict | None:
        """The command's JSON summary, if it printed one."""
        return next((e.data for e in reversed(self.events) if e.kind == "result"), None)

    def errors(self) -> list[str]:
        return [e.message for e in self.events if e.kind == "error"]

    def warnings(self) -> list[str]:
        return [e.message for e in self.events if e.kind == "warning"]

    def failure_message(self) -> str:
        """Why it failed, for the user (the command's own error lines first, else the log's tail)."""
        if self.cancelled:
            return "Cancelled."
        errors = self.errors()
        if errors:
            return "\n".join(errors)
        tail = [ln for ln in self.log if ln.strip()][-8:]
        return (f"the reconstruction process ended with exit code {self.returncode}"
                + (":\n" + "\n".join(tail) if tail else ""))


def python_executable() -> str:
    """The interpreter to run the command with: ``PythonSlicer`` inside Slicer (found on PATH
    next to the application), else this interpreter."""
    import shutil

    return shutil.which("PythonSlicer") or sys.executable


__all__ = ["QUALITIES", "DEVICES", "STAGE_PROGRESS", "library_root",
           "reconstruct_command", "subprocess_environment", "Event", "parse_line", "kill_process_tree",
           "ReconstructionProcess", "python_executable"]
