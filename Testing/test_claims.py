"""The docs' numbers stay tied to their records: the committed output of bench/report_numbers.py is
what the script prints from the committed reports today, and every file the docs cite as a record
exists."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import re

from X2BRLib.cli import REPO

DOCS = ["README.md", "bench/README.md", "docs/DECISIONS.md", "Resources/Models/x2b/MODEL_CARD.md",
        "Resources/Models/yolo/MODEL_CARD.md", "Resources/Template/TEMPLATE_CARD.md"]
CITED = re.compile(r"`((?:docs|bench|Resources|Testing|X2BRLib|scripts)/[^`\s]+)`")


def test_the_committed_report_numbers_are_what_the_script_prints_now():
    spec = importlib.util.spec_from_file_location("report_numbers", REPO / "bench" / "report_numbers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert module.main() == 0
    committed = (REPO / "bench" / "results" / "report_numbers.txt").read_text().splitlines()
    assert [line for line in committed if not line.startswith("# $")] == out.getvalue().splitlines()


def test_every_record_the_docs_cite_exists():
    cited = set()
    for doc in DOCS:
        for path in CITED.findall((REPO / doc).read_text()):
            if not any(c in path for c in "{}*<>") and "..." not in path:
                cited.add(path.rstrip(".,;:)"))
    assert len(cited) > 20
    assert {"bench/results/report_numbers.txt", "bench/results/sample_film_cpu.txt",
            "bench/results/template_fidelity.txt"} <= cited
    # `X2BRLib/imaging.robust_normalise` names a function of X2BRLib/imaging.py
    missing = sorted(p for p in cited if not (REPO / p).exists() and not (REPO / (p.split(".")[0] + ".py")).exists())
    assert missing == []
