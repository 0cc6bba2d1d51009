"""`x2br demo` (what `make demo` runs) end to end on the bundled data, on CPU."""
import json

from X2BRLib.cli import main


def test_demo_writes_x2b_and_x2br_reconstructions_a_drr_and_a_dataset(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--device", "cpu"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]  # it ends by saying what to open
    assert last.startswith(f"Open {out / 'x2br' / 'preview.png'} first")
    for method in ("x2b", "x2br"):
        report = json.loads((out / method / "report.json").read_text())
        assert report["bones_found"] >= 40
        assert (out / method / "bones.seg.nrrd").stat().st_size > 0
        assert len(list((out / method / "meshes").glob("*.stl"))) >= 40
    assert "refine" in json.loads((out / "x2br" / "report.json").read_text())["stats"]
    assert (out / "sample_drr.png").stat().st_size > 0
    manifest = json.loads((out / "dataset" / "dataset.json").read_text())
    assert {k: len(v) for k, v in manifest["splits"].items()} == {"train": 4, "val": 1, "test": 1}
