"""Which code made a file of weights: the commit and a content hash of the library's sources.

Exported weights (X2B ``x2b/train.py::export_weights``, the detector
``detect/train.py::export_detector``) record :func:`code_provenance`:

- ``code_commit``: ``$X2BR_CODE_COMMIT`` when set (it wins: the GPU machine's copy of the git
  record can be stale, so the caller passes ``git rev-parse HEAD`` of the checkout it copied),
  else git's HEAD (``-dirty`` when tracked files differ from it), else ``"unknown"``;
- ``code_commit_from``: ``"env"``, ``"git"`` or ``"unknown"``;
- ``code_sha256``: SHA-256 over every ``X2BRLib/**/*.py`` file under the repository, read from
  the files (not from git), so it is right whatever git says. Anyone can check which commit's
  code made weights: ``python -m X2BRLib.provenance COMMIT`` hashes that commit's files
  (``git show COMMIT:path``) the same way; without COMMIT it hashes the files on disk.

The hash: files sorted by their repository-relative POSIX path; for each, the path, a NUL,
the byte count, a NUL and the bytes go into one SHA-256.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "X2BRLib"
ENV_COMMIT = "X2BR_CODE_COMMIT"


def _digest(files) -> str:
    """files: iterable of (relative POSIX path, bytes) -> hex SHA-256 (sorted by path)."""
    h = hashlib.sha256()
    for rel, data in sorted(files):
        h.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0")
        h.update(data)
    return h.hexdigest()


def code_sha256(root=REPO) -> str:
    """SHA-256 of the ``X2BRLib/**/*.py`` files under ``root`` (a repository folder), from the files."""
    root = Path(root)
    files = sorted((root / PACKAGE).rglob("*.py"))
    return _digest((p.relative_to(root).as_posix(), p.read_bytes()) for p in files if p.is_file())


def _git(args, root, binary: bool = False):
    out = subprocess.run(["git", *args], cwd=root, capture_output=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.decode(errors="replace").strip() or f"git {' '.join(args)} failed")
    return out.stdout if binary else out.stdout.decode().strip()


def code_sha256_at(commit: str, root=REPO) -> str:
    """The same hash over ``commit``'s ``X2BRLib/**/*.py`` files, read with ``git show``."""
    listing = _git(["ls-tree", "-r", "-z", "--name-only", commit, "--", PACKAGE], root, binary=True)
    names = [n for n in listing.decode().split("\0") if n.endswith(".py")]
    return _digest((n, _git(["show", f"{commit}:{n}"], root, binary=True)) for n in names)


def code_commit(root=REPO) -> tuple[str, str]:
    """-> (commit, where from): ``$X2BR_CODE_COMMIT`` ("env"), else git's HEAD with ``-dirty``
    when tracked files are modified ("git"), else ("unknown", "unknown")."""
    env = os.environ.get(ENV_COMMIT, "").strip()
    if env:
        return env, "env"
    try:
        head = _git(["rev-parse", "HEAD"], root)
        dirty = _git(["status", "--porcelain", "--untracked-files=no"], root)
        return head + ("-dirty" if dirty else ""), "git"
    except (OSError, subprocess.SubprocessError, RuntimeError):
        return "unknown", "unknown"


def code_provenance(root=REPO) -> dict:
    """Flat dict for a weights record: code_commit, code_commit_from, code_sha256 (see the module)."""
    commit, source = code_commit(root)
    return {"code_commit": commit, "code_commit_from": source, "code_sha256": code_sha256(root)}


def main(argv=None) -> int:
    """``python -m X2BRLib.provenance [COMMIT]``: print the code hash of COMMIT, or of the files on disk."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print("usage: python -m X2BRLib.provenance [COMMIT]", file=sys.stderr)
        return 2
    try:
        print(code_sha256_at(argv[0]) if argv else code_sha256())
    except (OSError, subprocess.SubprocessError, RuntimeError) as e:
        print(f"x2br: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
