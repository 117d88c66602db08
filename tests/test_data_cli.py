"""``bench data synth | validate | stats`` through typer's CliRunner and the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from bench.cli import app

runner = CliRunner()


def test_help():
    for cmd in (["data", "--help"], ["data", "synth", "--help"], ["data", "validate", "--help"], ["data", "stats", "--help"]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 0, res.output


def test_synth_then_validate_and_stats(tmp_path):
    out = tmp_path / "cat"
    res = runner.invoke(app, ["data", "synth", "--out", str(out), "--size", "mini", "--seed", "2", "--n-listings", "30", "--workers", "1"])
    assert res.exit_code == 0, res.output
    info = json.loads((out / "info.json").read_text())
    assert info["seed"] == 2 and info["counts"]["listings"] == 30
    res = runner.invoke(app, ["data", "validate", str(out)])
    assert res.exit_code == 0, res.output
    assert "30 listings usable; 0 listing-level problem" in res.output.replace("\n", " ")
    res = runner.invoke(app, ["data", "stats", f"m5product:{out}"])
    assert res.exit_code == 0, res.output
    for word in ("listings", "categories", "products", "super-categories", "modality presence", "fine_query"):
        assert word in res.output
    res = runner.invoke(app, ["data", "synth", "--out", str(out), "--size", "mini"])
    assert res.exit_code != 0  # refuses a non-empty directory


def test_validate_counts_listing_problems_exit_zero(tmp_path):
    from test_data_bad_input import build_broken_release  # tests/ is on sys.path (rootdir-less prepend import)

    root = tmp_path / "rel"
    build_broken_release(root)
    res = runner.invoke(app, ["data", "validate", str(root)])
    assert res.exit_code == 0, res.output
    for reason in ("image_missing", "image_empty", "image_corrupt", "video_corrupt", "audio_no_frames",
                   "pv_malformed", "title_not_utf8", "duplicate_item_id", "label_missing"):
        assert reason in res.output


def test_validate_broken_file_exit_nonzero_names_file_and_line(tmp_path):
    (tmp_path / "meta_info.jsonl").write_text('{"item_id": "1", "label": "a"}\n{oops\n')
    res = runner.invoke(app, ["data", "validate", str(tmp_path)])
    assert res.exit_code == 2
    assert "meta_info.jsonl:2:" in res.output.replace("\n", "")
    # The installed entry point behaves the same (clean message, no traceback).
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "data", "validate", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "data", "stats", f"manifest:{tmp_path / 'none.csv'}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "manifest not found" in proc.stderr and "Traceback" not in proc.stderr
