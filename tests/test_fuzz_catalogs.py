"""Fuzz the catalog layer through the real CLI: many kinds of broken catalog (manifest and release
layouts) go to ``bench data validate``, ``bench run --dry-run`` and ``bench features build``.

Whatever the damage: no traceback, exit code 0 or 2, and every problem either counted (exit 0, the
reason in the report) or refused in one message (exit 2). Each kind is a tiny catalog of a handful
of listings. ``features build`` on catalogs that load is marked slow (it trains a tokenizer and
runs the image backbone); the refusals it must make before any work are in the fast subset.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from cli_helpers import cli, wide_console  # noqa: F401 - the fixture is used by name

from bench.modalities import Modality

# Healthy media, made once, copied into each catalog (tests/ is on sys.path, as in test_data_cli).
from test_data_bad_input import _good_media


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("fuzz_media")
    for d in ("images", "videos", "audios"):
        (root / d).mkdir()
    _good_media(root, "1")
    return {"jpg": (root / "images" / "1.jpg").read_bytes(), "mp4": (root / "videos" / "1.mp4").read_bytes(),
            "mp3": (root / "audios" / "1.mp3").read_bytes()}


@dataclass
class Kind:
    """One kind of broken catalog: ``build(dir, media)`` writes it and returns its source string.

    ``refused``: a fragment of the one-line refusal (exit 2), or None when the catalog loads and
    ``counted`` (reason -> count) are its listing-level problems. ``t_absent``: no listing has a
    title, so ``Catalog.check_modalities([T])`` must refuse it. ``build_refused``: a catalog that loads
    but that ``features build`` must refuse (nothing to featurize).
    """

    name: str
    build: Callable[[Path, dict[str, bytes]], str]
    refused: str | None = None
    counted: dict[str, int] = field(default_factory=dict)
    t_absent: bool = False
    build_refused: str | None = None


def _csv(d: Path, text: str, name: str = "m.csv", encoding: str = "utf-8") -> str:
    (d / name).write_bytes(text.encode(encoding))
    return f"manifest:{d / name}"


def _with_media(d: Path, media: dict[str, bytes]) -> None:
    for i in (1, 2, 3):
        (d / f"{i}.jpg").write_bytes(media["jpg"])
    (d / "1.mp4").write_bytes(media["mp4"])
    (d / "1.mp3").write_bytes(media["mp3"])


GOOD = "item_id,category,title,image\n1,a,red shirt,1.jpg\n2,a,blue shirt,2.jpg\n3,b,green hat,3.jpg\n"


def _manifest(rows: str, header: str = "item_id,category,title,table,image,video,audio") -> Callable:
    def build(d: Path, media: dict[str, bytes]) -> str:
        _with_media(d, media)
        return _csv(d, header + "\n" + rows)
    return build


def _release(meta: list[dict] | bytes | None = None, *, id_info: dict | None = None, images: tuple[str, ...] = (),
             name: str = "meta_info.jsonl", extra: Callable[[Path], None] | None = None, as_file: bool = False) -> Callable:
    def build(d: Path, media: dict[str, bytes]) -> str:
        root = d / "release"
        (root / "images").mkdir(parents=True)
        for iid in images:
            (root / "images" / f"{iid}.jpg").write_bytes(media["jpg"])
        if meta is not None:
            data = meta if isinstance(meta, bytes) else (
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in meta).encode() if name.endswith(".jsonl")
                else json.dumps(meta, ensure_ascii=False).encode())
            (root / name).write_bytes(data)
        if id_info is not None:
            (root / "id_info_dict.json").write_text(json.dumps(id_info))
        if extra is not None:
            extra(root)
        return f"manifest:{root / name}" if as_file else f"m5product:{root}"
    return build


def _rec(iid: str, label: str | None = "a", caption: str = "a title", **kw) -> dict:
    return {"item_id": iid, "caption": caption, "label": label, "tabular": {"colour": "red"}, **kw}


KINDS = [
    # --- manifests: encodings
    Kind("gbk_manifest", lambda d, m: _csv(d, "item_id,category,title\n1,衣服,红色衬衫\n2,鞋子,蓝色\n", encoding="gbk"),
         refused="--encoding"),
    Kind("utf16_manifest", lambda d, m: _csv(d, GOOD, encoding="utf-16"), refused="--encoding"),
    Kind("one_latin1_title", lambda d, m: _csv(d, "item_id,category,title\n1,a,caf\xe9\n", encoding="latin-1"),
         refused="at byte 30 (bytes e9)"),
    Kind("utf8_bom_manifest", lambda d, m: (_with_media(d, m), _csv(d, GOOD, encoding="utf-8-sig"))[1]),
    # --- manifests: empty files, missing and renamed columns
    Kind("empty_csv", lambda d, m: _csv(d, ""), refused="missing required column 'item_id'"),
    Kind("empty_jsonl", lambda d, m: _csv(d, "", name="m.jsonl"), refused="missing required column 'item_id'"),
    Kind("header_only", lambda d, m: _csv(d, "item_id,category,title\n"), refused="no listings"),
    Kind("no_item_id_column", lambda d, m: _csv(d, "id_,category\n1,a\n"), refused="missing required column 'item_id'"),
    Kind("renamed_category", lambda d, m: _csv(d, "item_id,Category,title\n1,a,x\n"), refused="did you mean 'category'"),
    Kind("renamed_title_and_image", lambda d, m: (_with_media(d, m), _csv(d, "item_id,category,Title,img_path\n1,a,x,1.jpg\n2,b,y,2.jpg\n"))[1],
         t_absent=True, build_refused="nothing to featurize"),
    Kind("no_labels", lambda d, m: _csv(d, "item_id,category,title\n1,,x\n2,,y\n"), refused="no usable listing"),
    # --- manifests: broken rows
    Kind("duplicate_ids", _manifest("1,a,x,,1.jpg,,\n1,b,y,,2.jpg,,\n2,a,z,,3.jpg,,"), counted={"duplicate_item_id": 1}),
    Kind("blank_ids", _manifest(",a,x,,,,\n  ,a,y,,,,\n2,a,z,,3.jpg,,"), counted={"item_id_missing": 2}),
    Kind("empty_titles", _manifest("1,a,,,1.jpg,,\n2,a,   ,,2.jpg,,\n3,a,ok,,3.jpg,,"), counted={"title_empty": 2}),
    Kind("malformed_pv", _manifest("1,a,x,k#:#v#;#broken,1.jpg,,\n2,a,y,k#:#v,2.jpg,,"), counted={"pv_malformed": 1}),
    Kind("ragged_rows", _manifest("1,a,x,,1.jpg,,,extra,cells\n2,a,y"), counted={}),
    Kind("nul_byte", lambda d, m: _csv(d, "item_id,category,title\n1,a,x\x00y\n2,a,z\n")),
    # --- manifests: broken media of every modality, absent files, paths outside the folder
    Kind("corrupt_media", lambda d, m: ((d / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg" * 20),
                                        (d / "bad.mp4").write_bytes(m["mp4"][: len(m["mp4"]) // 2]),
                                        (d / "bad.mp3").write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00"),
                                        _manifest("1,a,x,,bad.jpg,bad.mp4,bad.mp3\n2,a,y,,1.jpg,1.mp4,1.mp3")(d, m))[-1],
         counted={"image_corrupt": 1, "video_corrupt": 1, "audio_no_frames": 1}),
    Kind("empty_media", lambda d, m: ((d / "e.jpg").write_bytes(b""), (d / "e.mp4").write_bytes(b""), (d / "e.mp3").write_bytes(b""),
                                      _manifest("1,a,x,,e.jpg,e.mp4,e.mp3\n2,a,y,,1.jpg,,")(d, m))[-1],
         counted={"image_empty": 1, "video_empty": 1, "audio_empty": 1}),
    Kind("absent_media", _manifest("1,a,x,,gone.jpg,gone.mp4,gone.mp3\n2,a,y,,1.jpg,,"),
         counted={"image_missing": 1, "video_missing": 1, "audio_missing": 1}),
    Kind("paths_outside_folder", _manifest("1,a,x,,../../nowhere/x.jpg,,\n2,a,y,,/dev/zero,,\n3,a,z,,/,,\n4,a,w,,1.jpg,,"),
         counted={"image_missing": 3}),
    # An MP3 as image does not decode; an MP4 without sound has no audio frame; FFmpeg reads a JPEG as
    # a one-frame video, which is a usable (if short) video.
    Kind("media_kinds_swapped", _manifest("1,a,x,,1.mp3,1.jpg,1.mp4\n2,a,y,,2.jpg,,"),
         counted={"image_corrupt": 1, "audio_no_frames": 1}),
    # --- manifests: other formats
    Kind("bad_jsonl_line", lambda d, m: _csv(d, '{"item_id": 1, "label": "a"}\n{"item_id": 2 "label": "b"}\n', name="m.jsonl"),
         refused="m.jsonl:2:"),
    Kind("json_not_a_list", lambda d, m: _csv(d, '{"item_id": 1}', name="m.json"), refused="expected a JSON list"),
    Kind("garbage_parquet", lambda d, m: _csv(d, "PAR1 not really", name="m.parquet"), refused="unreadable Parquet"),
    Kind("unsupported_type", lambda d, m: _csv(d, GOOD, name="m.xlsx"), refused="unsupported manifest type"),
    # --- release layouts
    Kind("meta_info_file_as_path", _release([_rec("1")], name="meta_info.json", as_file=True), refused="pass its folder"),
    Kind("release_gbk_labels", _release("".join(json.dumps(_rec(str(i), label="衣服"), ensure_ascii=False) + "\n"
                                                for i in (1, 2)).encode("gbk")),
         refused="--encoding"),
    Kind("release_empty_meta", _release(b""), refused="no listings"),
    Kind("release_no_annotation", _release(None), refused="no annotation file"),
    Kind("release_bad_json", _release(b'{"item_id": "1", "label": "a"}\n{oops\n'), refused="meta_info.jsonl:2:"),
    Kind("release_code_layout_image_absent",
         _release(None, id_info={"1": {"title": "t", "pv": "a#:#b", "label": "x"}, "2": {"title": "u", "pv": "", "label": "x"},
                                 "3": {"title": "", "pv": "", "label": "y"}}, images=("1", "3")),
         counted={"image_missing": 1, "title_empty": 1}),
    Kind("release_records_broken", _release([_rec("1"), _rec(""), {"caption": "no id", "label": "a"}, _rec("1", label="b"),
                                             _rec("2", caption=""), _rec("3", image="images/none.jpg")], images=("1", "2")),
         counted={"item_id_missing": 2, "duplicate_item_id": 1, "title_empty": 1, "image_missing": 1}),
    Kind("release_renamed_keys", _release([{"item_id": "1", "Caption": "x", "label": "a"}, {"item_id": "2", "Caption": "y", "label": "a"}],
                                          images=("1", "2")),
         t_absent=True),
    Kind("release_bad_split_list", _release([_rec("1")], images=("1",),
                                            extra=lambda r: ((r / "splits").mkdir(), (r / "splits" / "pretrain_ids.json").write_text("[1, 2"))),
         refused="pretrain_ids.json:1:"),
]


@pytest.fixture(autouse=True)
def _wide_console(wide_console):
    """One-line messages stay on one line."""


def _one_refusal(err: str) -> str:
    """The refusal, checked to be exactly one line (and the only thing on stderr)."""
    lines = _lines(err)
    assert len(lines) == 1 and lines[0].startswith(("error:", "invalid catalog:")), err
    return lines[0]


@pytest.fixture(params=KINDS, ids=[k.name for k in KINDS])
def kind_src(request, tmp_path, media):
    kind = request.param
    return kind, kind.build(tmp_path, media)


def test_validate(kind_src, capsys):
    kind, src = kind_src
    rc, out, err = cli(["data", "validate", src], capsys)
    assert rc in (0, 2)
    if kind.refused is not None:
        assert rc == 2, out + err
        assert kind.refused in _one_refusal(err), err
        return
    assert rc == 0, err
    for reason, n in kind.counted.items():  # the row of the problems table
        assert re.search(rf"\b{reason}\s*[│|]\s*{n}\s*[│|]", out), out
    total = sum(kind.counted.values())
    if total or not kind.t_absent:
        assert f"{total} listing-level problem(s)" in out, out
    for reason in kind.counted:  # every counted listing can be named
        rc, ids, _ = cli(["data", "validate", src, "--list", reason], capsys)
        assert rc == 0 and len(ids.splitlines()) == kind.counted[reason], ids


def test_run_dry_run(kind_src, capsys, tmp_path):
    kind, src = kind_src
    rc, out, err = cli(["run", "--model", "bert", "--modalities", "T", "--data", src, "--dry-run",
                        "--results", str(tmp_path / "results")], capsys)
    assert rc in (0, 2)
    if kind.refused is not None:
        assert rc == 2 and kind.refused in _one_refusal(err), err
    elif kind.t_absent:  # the requested modality is refused before anything else
        assert rc == 2 and "no listing has title" in _one_refusal(err), err
    elif rc == 2:  # these catalogs hold a handful of listings: less than one pretraining batch
        assert "need at least one batch of 64" in _one_refusal(err), err
    if kind.t_absent:
        from bench.data import CatalogError, load_catalog

        cat = load_catalog(src, progress=False)
        with pytest.raises(CatalogError, match="no listing has title"):
            cat.check_modalities([Modality.T])


def _features_build(kind: Kind, src: str, capsys) -> None:
    rc, out, err = cli(["features", "build", src, "--workers", "1", "--vocab-size", "200"], capsys)
    assert rc in (0, 2)
    if kind.refused is not None:
        assert rc == 2 and kind.refused in _one_refusal(err), err
    elif kind.build_refused is not None:  # after the load summary: one line saying why
        assert rc == 2 and err.count("error:") == 1 and kind.build_refused in _lines(err)[-1], err
    else:
        assert rc == 0, err
        assert "feature store" in out


def _lines(s: str) -> list[str]:
    return [line for line in s.splitlines() if line.strip()]


@pytest.mark.parametrize("kind", [k for k in KINDS if k.refused or k.build_refused], ids=lambda k: k.name)
def test_features_build_refuses_before_work(kind, tmp_path, media, capsys):
    _features_build(kind, kind.build(tmp_path, media), capsys)


@pytest.mark.slow
@pytest.mark.parametrize("kind", [k for k in KINDS if not (k.refused or k.build_refused)], ids=lambda k: k.name)
def test_features_build_on_loadable_catalogs(kind, tmp_path, media, capsys):
    _features_build(kind, kind.build(tmp_path, media), capsys)


def test_enough_kinds():
    assert len(KINDS) >= 20
    assert len({k.name for k in KINDS}) == len(KINDS)
