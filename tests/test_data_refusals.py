"""What a new user's bad input gets: empty catalogs and other encodings refused in one line,
unrecognised columns named with the likely fix, broken listings counted with their ids, the
``load_catalog`` options the pipeline passes through, and a quiet Ctrl-C in worker pools."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from cli_helpers import cli, wide_console  # noqa: F401 - the fixture is used by name

from bench.data import CatalogError, load_catalog
from bench.modalities import Modality


@pytest.fixture(autouse=True)
def _wide_console(wide_console):
    """One-line messages stay on one line."""


def _lines(s: str) -> list[str]:
    return [line for line in s.splitlines() if line.strip()]


# --------------------------------------------------------------------------- item 3


def test_empty_catalog_refused_in_one_line(tmp_path, capsys):
    m = tmp_path / "m.csv"
    m.write_text("item_id,category,title\n1,,red shirt\n2,,blue shirt\n3,,hat\n")
    with pytest.raises(CatalogError, match=r"no usable listing: 3 read from m\.csv, all rejected \(label_missing 3\)"):
        load_catalog(f"manifest:{m}", progress=False)
    for argv in (["features", "build", f"manifest:{m}", "--workers", "1"],
                 ["run", "--model", "bert", "--modalities", "T", "--data", f"manifest:{m}", "--dry-run"]):
        rc, out, err = cli(argv, capsys)
        assert rc == 2, err
        (line,) = _lines(err)  # one line, before any work
        assert "no usable listing" in line and f"bench data validate {m} --list label_missing" in line
    # validate agrees now: the table of reasons, then the same refusal, exit 2
    rc, out, err = cli(["data", "validate", str(m)], capsys)
    assert rc == 2 and "label_missing" in out and len(_lines(err)) == 1 and "no usable listing" in err
    rc, out, err = cli(["data", "validate", str(m), "--list", "label_missing"], capsys)
    assert rc == 2 and _lines(out) == ["1", "2", "3"]


def test_header_only_manifest_refused(tmp_path, capsys):
    m = tmp_path / "m.csv"
    m.write_text("item_id,category,title\n")
    rc, _, err = cli(["features", "build", f"manifest:{m}", "--workers", "1"], capsys)
    assert rc == 2 and "no listings: m.csv has no records" in err


def test_build_features_refuses_zero_rows_cleanly():
    from bench.console import UserError
    from bench.features import build_features

    class Empty:
        dataset, fingerprint, source, info = [], "0" * 32, "manifest:/x.csv", {}

    with pytest.raises(UserError, match="has no listings"):
        build_features(Empty(), progress=False)


# --------------------------------------------------------------------------- item 4


def test_gbk_manifest_names_encoding_and_offset(tmp_path, capsys):
    m = tmp_path / "gbk.csv"
    m.write_bytes("item_id,category,title\n1,衣服,红色衬衫\n2,鞋子,蓝色\n".encode("gbk"))
    rc, _, err = cli(["data", "validate", str(m)], capsys)
    assert rc == 2
    (line,) = _lines(err)
    offset = len(b"item_id,category,title\n1,")
    assert f"{m}:2: not valid utf-8 text at byte {offset}" in line and "--encoding" in line
    rc, out, err = cli(["data", "validate", str(m), "--encoding", "gbk"], capsys)
    assert rc == 0 and "2 listings usable; 0 listing-level problem(s)" in out, err
    cat = load_catalog(f"manifest:{m}", progress=False, encoding="gbk")
    assert cat.dataset["category"] == ["衣服", "鞋子"] and cat.dataset["title"] == ["红色衬衫", "蓝色"]
    for argv in (["data", "stats", str(m), "--encoding", "gbk"], ["data", "validate", str(m), "--encoding", "klingon"]):
        rc, out, err = cli(argv, capsys)
        assert rc == (0 if "gbk" in argv else 2)
    assert "unknown text encoding 'klingon'" in err


def test_encoding_is_part_of_the_catalog_identity(tmp_path):
    m = tmp_path / "m.csv"
    m.write_bytes("item_id,category,title\n1,a,caf\xe9\n".encode("latin-1"))
    a = load_catalog(f"manifest:{m}", progress=False, encoding="latin-1")
    b = load_catalog(f"manifest:{m}", progress=False, encoding="cp1251")
    assert a.dataset["title"] == ["café"] and a.fingerprint != b.fingerprint


def test_utf8_bom_is_dropped(tmp_path):
    m = tmp_path / "m.csv"
    m.write_bytes("item_id,category\n1,a\n".encode("utf-8-sig"))
    assert load_catalog(f"manifest:{m}", progress=False).dataset["item_id"] == ["1"]


def test_release_in_another_encoding_points_at_encoding(tmp_path, capsys):
    lines = [json.dumps({"item_id": str(i), "caption": "红色", "label": "衣服"}, ensure_ascii=False) for i in (1, 2)]
    (tmp_path / "meta_info.jsonl").write_bytes("\n".join(lines).encode("gbk"))
    rc, out, err = cli(["data", "validate", str(tmp_path)], capsys)
    assert rc == 2 and "label_not_utf8 2" in err and "pass --encoding" in err and "label_not_utf8" in out
    cat = load_catalog(f"m5product:{tmp_path}", progress=False, encoding="gbk")
    assert cat.dataset["category"] == ["衣服", "衣服"]


# --------------------------------------------------------------------------- item 5


def test_renamed_columns_warned_and_empty_modality_refused(tmp_path, capsys):
    (tmp_path / "1.jpg").write_bytes(b"")
    m = tmp_path / "m.csv"
    m.write_text("item_id,category,Title,img_path,colour\n1,a,red shirt,1.jpg,red\n2,b,blue shirt,1.jpg,blue\n")
    cat = load_catalog(f"manifest:{m}", progress=False)
    assert cat.info["unknown_columns"] == ["Title", "img_path", "colour"]
    assert cat.modality_presence()["T"] == 0
    with pytest.raises(CatalogError) as ei:
        cat.check_modalities([Modality.I, Modality.T])
    msg = str(ei.value)
    assert "\n" not in msg
    assert "no listing has title (T: 0 % of 2 listings): column 'Title' is not recognised; did you mean 'title'?" in msg
    assert "column 'img_path' is not recognised; did you mean 'image'?" in msg
    with pytest.raises(CatalogError, match=r"no listing has table .*unrecognised columns: 'colour'"):
        cat.check_modalities(["Tab"])
    for argv in (["data", "validate", str(m)], ["data", "stats", str(m)]):
        rc, out, err = cli(argv, capsys)
        assert rc == 0
        assert "3 unrecognised column(s) ignored: 'Title' (did you mean 'title'?), 'img_path' (did you mean 'image'?), 'colour'" in err
    load_catalog(f"manifest:{m}", progress=True)
    assert "unrecognised column(s) ignored" in capsys.readouterr().err
    # nothing to featurize at all: refused in one line before any work
    rc, _, err = cli(["features", "build", f"manifest:{m}", "--workers", "1"], capsys)
    assert rc == 2 and "nothing to featurize" in _lines(err)[-1] and "did you mean 'title'" in _lines(err)[-1]


def test_missing_required_column_suggests_the_fix(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("item_id,Category,title\n1,a,x\n")
    with pytest.raises(CatalogError, match="column 'Category' is not recognised, did you mean 'category'"):
        load_catalog(f"manifest:{m}", progress=False)


def test_check_modalities_names_the_problems_that_emptied_a_modality(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("item_id,category,title,image\n1,a,x,gone.jpg\n2,a,y,gone2.jpg\n")
    cat = load_catalog(f"manifest:{m}", progress=False)
    cat.check_modalities([Modality.T])  # present: no error
    with pytest.raises(CatalogError, match=r"every listed one was rejected \(image_missing 2\); see `bench data validate .* --list image_missing`"):
        cat.check_modalities([Modality.I])


def test_release_meta_info_file_refused_with_folder_hint(tmp_path, capsys):
    rel = tmp_path / "release"
    rel.mkdir()
    (rel / "meta_info.json").write_text(json.dumps([{"item_id": "1", "caption": "red", "tabular": {"a": "b"}, "label": "x"}]))
    for arg in (str(rel / "meta_info.json"), f"manifest:{rel / 'meta_info.json'}", f"m5product:{rel / 'meta_info.json'}"):
        rc, _, err = cli(["data", "validate", arg], capsys)
        assert rc == 2
        (line,) = _lines(err)
        assert f"m5product:{rel}" in line
    cat = load_catalog(f"m5product:{rel}", progress=False)
    assert cat.modality_presence()["T"] == 1.0 and cat.modality_presence()["Tab"] == 1.0


def test_release_unknown_keys_recorded(tmp_path):
    (tmp_path / "meta_info.jsonl").write_text(json.dumps({"item_id": "1", "Caption": "x", "label": "a", "img": "1.jpg"}) + "\n")
    cat = load_catalog(f"m5product:{tmp_path}", progress=False)
    assert cat.info["unknown_columns"] == ["Caption", "img"]
    assert cat.info["column_hints"] == {"Caption": "caption", "img": "image"}
    with pytest.raises(CatalogError, match="column 'Caption' is not recognised; did you mean 'caption'"):
        cat.check_modalities([Modality.T])


# --------------------------------------------------------------------------- item 6


def _code_layout(root: Path) -> None:
    """The SCALE code's layout: id_info_dict.json plus images/<item_id>.jpg, one image absent."""
    from test_data_bad_input import _good_media

    for d in ("images", "videos", "audios"):
        (root / d).mkdir(parents=True)
    _good_media(root, "1", video=False, audio=False)
    _good_media(root, "3", video=False, audio=False)
    (root / "id_info_dict.json").write_text(json.dumps({
        "1": {"title": "red shirt", "pv": "colour#:#red", "label": "a"},
        "2": {"title": "blue shirt", "pv": "colour#:#blue", "label": "a"},  # images/2.jpg is absent
        "3": {"title": "  ", "pv": "colour#:#green", "label": "b"},  # an empty title
    }))


def test_absent_image_and_empty_title_are_counted_with_ids(tmp_path, capsys):
    _code_layout(tmp_path)
    cat = load_catalog(f"m5product:{tmp_path}", progress=False)
    assert cat.skips == Counter({"image_missing": 1, "title_empty": 1})
    assert cat.problem_ids == {"image_missing": ["2"], "title_empty": ["3"]}
    rc, out, _ = cli(["data", "validate", str(tmp_path)], capsys)
    assert rc == 0 and "2 listing-level problem(s)" in out and "--list REASON" in out
    rc, out, err = cli(["data", "validate", str(tmp_path), "--list", "image_missing"], capsys)
    assert rc == 0 and _lines(out) == ["2"] and "1 listing(s) with image_missing" in err
    rc, out, _ = cli(["data", "validate", str(tmp_path), "--list", "title empty"], capsys)  # spaces work too
    assert rc == 0 and _lines(out) == ["3"]
    rc, out, _ = cli(["data", "validate", str(tmp_path), "--list", "video_corrupt"], capsys)  # known, none here
    assert rc == 0 and out == ""
    rc, _, err = cli(["data", "validate", str(tmp_path), "--list", "image_mising"], capsys)
    assert rc == 2 and "unknown problem reason 'image_mising' (did you mean 'image_missing'?)" in err
    assert "known reasons:" in err and len(_lines(err)) == 1


def test_explicit_null_title_is_absent_not_a_problem(tmp_path):
    """A title named as null is an absent modality (the generator's title-less listings), unlike a
    blank one; id_info's "" for the same listing does not turn it into a problem."""
    (tmp_path / "meta_info.jsonl").write_text(json.dumps({"item_id": "1", "caption": None, "label": "a"}) + "\n")
    (tmp_path / "id_info_dict.json").write_text(json.dumps({"1": {"title": "", "pv": "", "label": "a"}}))
    assert not load_catalog(f"m5product:{tmp_path}", progress=False).skips


def test_media_path_that_is_not_a_file_is_missing(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("item_id,category,image,audio\n1,a,/dev/zero,.\n")
    cat = load_catalog(f"manifest:{m}", progress=False)
    assert cat.skips == Counter({"image_missing": 1, "audio_missing": 1})


# --------------------------------------------------------------------------- load_catalog options


def test_eval_fraction_and_split_seed_change_splits_and_fingerprint(tmp_path):
    m = tmp_path / "m.csv"  # no split id lists: the hash draw decides
    m.write_text("item_id,category,title\n" + "".join(f"{i},c{i % 4},title {i}\n" for i in range(60)))
    src = f"manifest:{m}"
    base = load_catalog(src, progress=False)
    more = load_catalog(src, progress=False, eval_fraction=0.6)
    assert base.info["split"]["eval_fraction"] == 0.2 and more.info["split"]["eval_fraction"] == 0.6
    assert len(more.split_indices("gallery")) > len(base.split_indices("gallery"))
    assert more.fingerprint != base.fingerprint  # the split columns are hashed into the fingerprint
    assert load_catalog(src, progress=False, split_seed=7).fingerprint != base.fingerprint
    assert load_catalog(src, progress=False, eval_fraction=0.6).fingerprint == more.fingerprint
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(CatalogError, match="eval fraction must be between 0 and 1"):
            load_catalog(src, progress=False, eval_fraction=bad)


# --------------------------------------------------------------------------- item 9 (features build half)


def _ignores_sigint() -> bool:
    return signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_pool_workers_ignore_ctrl_c():
    """Workers started under sigint_blocked never get the terminal's SIGINT (the parent handles it)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from bench.data.paths import sigint_blocked

    before = signal.getsignal(signal.SIGINT)
    for method in ("spawn", "fork"):
        with sigint_blocked():
            ex = ProcessPoolExecutor(1, mp_context=mp.get_context(method))
            fut = ex.submit(_ignores_sigint)
        assert fut.result(timeout=120) is True, method
        ex.shutdown()
    assert signal.getsignal(signal.SIGINT) == before


def _spawned_workers(pid: int) -> list[int]:
    """The spawned multiprocessing workers among ``pid``'s children (Linux /proc)."""
    try:
        kids = [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    out = []
    for k in kids:
        try:
            if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes():
                out.append(k)
        except OSError:
            pass
    return out


def _as_from_a_terminal() -> None:
    """In the child before exec: SIGINT as a terminal leaves it (default, unblocked). A runner that
    starts the tests in the background (``cmd &`` in a non-interactive shell) ignores SIGINT, and
    Python keeps an ignored SIGINT ignored, so the child would never see the Ctrl-C under test."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the worker processes through /proc")
@pytest.mark.parametrize("delay", [0.3, 8.0], ids=["workers-starting", "workers-featurizing"])
def test_ctrl_c_in_features_build_is_quiet(mini_catalog, tmp_path, delay):
    """A terminal Ctrl-C (SIGINT to the whole process group) once the feature workers exist: one
    line saying what was kept and how to resume, exit 130, no worker traceback."""
    env = dict(os.environ, M5BENCH_HOME=str(tmp_path / "home"))
    p = subprocess.Popen([sys.executable, "-m", "bench.cli", "features", "build", f"m5product:{mini_catalog.root}",
                          "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True, preexec_fn=_as_from_a_terminal)
    try:
        t0 = time.time()
        while len(_spawned_workers(p.pid)) < 2 and time.time() - t0 < 180 and p.poll() is None:
            time.sleep(0.05)
        assert len(_spawned_workers(p.pid)) == 2, "the feature workers never started"
        time.sleep(delay)
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=180)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, out + err
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err, err
    line = " ".join(err.split())
    assert "interrupted: kept" in line and "run the same command to resume" in line, err
