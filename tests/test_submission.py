"""The submission zip stands alone: it holds exactly the report and the four scripts, and those
scripts ran, from a folder holding nothing else but the data, with no PYTHONPATH and no user site
(tests/e2e_build.py: the shared end-to-end build, also read by test_report.py).
"""

from __future__ import annotations

import zipfile

from e2e_build import PENN_KEY, SCRIPTS, build


def test_zip_holds_exactly_one_pdf_and_the_four_scripts() -> None:
    b = build()
    assert b.zip_path.name == f"1_{PENN_KEY}.zip"
    with zipfile.ZipFile(b.zip_path) as archive:
        assert sorted(archive.namelist()) == sorted(["report.pdf", *SCRIPTS])
        assert archive.read("report.pdf") == b.pdf.read_bytes()
        for name in SCRIPTS:  # byte for byte the files that ran (copies of the repository's)
            assert archive.read(name) == (b.work / name).read_bytes(), name


def test_the_scripts_ran_alone_on_the_data() -> None:
    b = build()
    modules = sorted(p.name for p in b.work.glob("*.py"))
    assert modules == sorted(SCRIPTS)  # no fifth module the scripts could have imported
    assert set(b.results) == {"part1_loss_gradient.json", "part2_fc.json", "part3_line.json", "part3_detection.json"}
    for name in ("part2_fc.json", "part3_line.json", "part3_detection.json"):
        assert b.results[name]["data"]["provenance"] == "stand-in", name
    for name, results in b.results.items():
        for figure in results["figures"]:
            file = figure["file"] if isinstance(figure, dict) else figure
            assert (b.figures / file).read_bytes().startswith(b"\x89PNG"), (name, file)
