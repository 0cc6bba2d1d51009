"""Which code made exported weights: X2BRLib.provenance (commit from the environment or git, code hash)."""
import shutil
import subprocess
from pathlib import Path

import pytest

from X2BRLib import provenance
from X2BRLib.provenance import code_commit, code_provenance, code_sha256, code_sha256_at

SOURCES = ("anatomy.py", "geometry.py", "provenance.py", "io/checked.py")


def _copy_sources(root: Path) -> Path:
    for rel in SOURCES:
        dst = root / "X2BRLib" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(provenance.REPO / "X2BRLib" / rel, dst)
    return root


def _git(root: Path, *args) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = _copy_sources(tmp_path / "repo")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "sources")
    return root


def test_the_code_hash_changes_when_a_source_file_changes_and_only_then(tmp_path):
    root = _copy_sources(tmp_path)
    before = code_sha256(root)
    assert len(before) == 64 and code_sha256(root) == before
    (root / "X2BRLib" / "notes.txt").write_text("not code")
    (root / "X2BRLib" / "__pycache__").mkdir()
    (root / "X2BRLib" / "__pycache__" / "anatomy.cpython-311.pyc").write_bytes(b"\0compiled")
    assert code_sha256(root) == before  # only X2BRLib/**/*.py counts
    f = root / "X2BRLib" / "io" / "checked.py"
    text = f.read_bytes()
    f.write_bytes(text + b"\n")
    changed = code_sha256(root)
    assert changed != before
    f.write_bytes(text)
    assert code_sha256(root) == before
    f.rename(root / "X2BRLib" / "io" / "checked2.py")  # same bytes under another name
    assert code_sha256(root) not in (before, changed)


def test_a_commit_hashes_the_same_as_its_files_on_disk(repo):
    assert code_sha256_at("HEAD", repo) == code_sha256(repo)
    (repo / "X2BRLib" / "geometry.py").write_text("# edited\n")
    assert code_sha256_at("HEAD", repo) != code_sha256(repo)


def test_the_environment_commit_wins_over_git(repo, monkeypatch):
    head = _git(repo, "rev-parse", "HEAD")
    monkeypatch.delenv(provenance.ENV_COMMIT, raising=False)
    assert code_commit(repo) == (head, "git")
    (repo / "X2BRLib" / "anatomy.py").write_text("# edited\n")
    assert code_commit(repo) == (head + "-dirty", "git")
    monkeypatch.setenv(provenance.ENV_COMMIT, "197d54a0123")
    record = code_provenance(repo)
    assert record == {"code_commit": "197d54a0123", "code_commit_from": "env", "code_sha256": code_sha256(repo)}


def test_without_git_or_environment_the_commit_is_unknown_but_the_hash_is_known(tmp_path, monkeypatch):
    root = _copy_sources(tmp_path)
    monkeypatch.delenv(provenance.ENV_COMMIT, raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no repository above tmp_path
    record = code_provenance(root)
    assert (record["code_commit"], record["code_commit_from"]) == ("unknown", "unknown")
    assert record["code_sha256"] == code_sha256(root)
