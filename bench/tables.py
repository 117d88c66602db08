"""The paper's tables, declared once as data.

Each :class:`TableSpec` names the result cells it needs (model, modalities, split, overrides),
the metric each column reads (which key under which group of ``result["metrics"]``), and the
rows of the published numbers in ``leaderboards/paper/<name>.json`` that sit beside it. The
renderer (:mod:`bench.leaderboard`), ``bench sweep`` (which cells to run) and ``bench check`` all
read these specs, so a table is never described twice.

All specs are for higher-is-better metrics stored as fractions in [0, 1]; tables print percentages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from bench.modalities import ModalitySet

PRETRAIN, FINETUNE = "pretrain", "finetune"

#: Where the published numbers live, relative to the repository root.
PAPER_DIR = Path(__file__).resolve().parent.parent / "leaderboards" / "paper"


def normalize_override(value: Any) -> str:
    """One spelling per override value, so ``True``, ``"true"`` and ``"True"`` name the same cell.

    ``bench run --set k=v`` receives strings; a result may record the parsed value. Matching on the
    normalised string keeps tables and sweeps independent of how ``bench run`` types the value.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text.lower() if text.lower() in ("true", "false") else text


def canonical_source(source: str | None) -> str:
    """One spelling per catalog source, as ``bench run`` records it in ``result["data"]["source"]``.

    ``None``/``synthetic`` -> ``synthetic:default``; ``synthetic:mini:0`` -> ``synthetic:mini``;
    ``m5product:PATH`` / ``manifest:PATH`` -> the resolved absolute path. Kept here (string rules
    only) so the table code need not import the data layer.
    """
    if source is None or source.strip() in ("", "synthetic"):
        return "synthetic:default"
    kind, sep, arg = source.strip().partition(":")
    if kind == "synthetic":
        size, _, seed = arg.partition(":")
        return f"synthetic:{size or 'default'}" + (f":{seed}" if seed and seed != "0" else "")
    if kind in ("m5product", "manifest") and sep and arg:
        return f"{kind}:{Path(arg).expanduser().resolve()}"
    return source.strip()


def same_source(requested: str | None, recorded: Mapping[str, Any]) -> bool:
    """Whether a result's ``data`` block (source, or fingerprint prefix) is the requested catalog."""
    if requested is None:
        return True
    src = recorded.get("source")
    if src is not None and canonical_source(str(src)) == canonical_source(requested):
        return True
    fp = str(recorded.get("fingerprint") or "")
    return len(requested) >= 6 and fp.startswith(requested)


@dataclass(frozen=True, order=True)
class CellSpec:
    """One cell of results: everything that names a run except data, preset and seed."""

    model: str
    modalities: str  # canonical "I,T,Tab"
    split: str  # "subset" | "full"
    overrides: tuple[tuple[str, str], ...] = ()

    @classmethod
    def make(cls, model: str, modalities: str, split: str,
             overrides: Mapping[str, Any] | None = None) -> "CellSpec":
        mods = str(ModalitySet.parse(modalities))
        ov = tuple(sorted((str(k), normalize_override(v)) for k, v in (overrides or {}).items()))
        return cls(model, mods, split, ov)

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> "CellSpec":
        """The spec a result file answers (raises KeyError/ValueError on a malformed cell)."""
        c = result["cell"]
        return cls.make(c["model"], c["modalities"], c["split"], c.get("overrides") or {})

    @property
    def overrides_dict(self) -> dict[str, str]:
        return dict(self.overrides)

    def describe(self) -> str:
        ov = " ".join(f"{k}={v}" for k, v in self.overrides)
        return f"{self.model} {self.modalities} {self.split}" + (f" [{ov}]" if ov else "")


@dataclass(frozen=True)
class Metric:
    """A metric read from ``result["metrics"][group]``; ``keys`` are tried in order (aliases)."""

    group: str
    keys: tuple[str, ...]

    def read(self, result: Mapping[str, Any]) -> float | None:
        """The value as a float, or None when absent, null or not finite."""
        grp = (result.get("metrics") or {}).get(self.group) or {}
        for k in self.keys:
            v = grp.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
                return float(v)
        return None


@dataclass(frozen=True)
class Column:
    """A printed column; several parts print as ``a / b`` (the paper's pretrain / finetune pairs)."""

    name: str
    parts: tuple[Metric, ...]


@dataclass(frozen=True)
class Row:
    """One printed row.

    ``default_cell``: for an ablation variant that is the model's default setting, the headline run
    (no overrides) answers the row too, provided its resolved config confirms ``setting`` (so a
    changed default can never silently relabel a row). It is also the cell ``bench sweep`` runs,
    so the headline run is shared with the other tables instead of duplicated.
    """

    label: str
    cell: CellSpec
    paper_row: str | None = None  # key in the paper JSON section; None: the paper has no such row
    default_cell: CellSpec | None = None
    setting: tuple[str, str] | None = None  # (key, normalised value) the default_cell must resolve to

    @property
    def sweep_cell(self) -> CellSpec:
        return self.default_cell or self.cell


@dataclass(frozen=True)
class Section:
    key: str  # key of the section in the paper JSON, and a stable id
    title: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    cell_note: str  # what a printed cell means


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    row_header: str
    sections: tuple[Section, ...]
    paper_file: str | None = None  # file name under leaderboards/paper/
    notes: tuple[str, ...] = field(default=())

    def cells(self) -> list[CellSpec]:
        """Every distinct cell this table needs, in table order."""
        seen: dict[CellSpec, None] = {}
        for sec in self.sections:
            for row in sec.rows:
                seen.setdefault(row.sweep_cell, None)
        return list(seen)

    def all_cells(self) -> list[CellSpec]:
        """Every cell whose results can appear in this table (explicit and default cells)."""
        seen: dict[CellSpec, None] = {}
        for sec in self.sections:
            for row in sec.rows:
                for c in (row.cell, row.default_cell):
                    if c is not None:
                        seen.setdefault(c, None)
        return list(seen)


# --- metric vocabulary -------------------------------------------------------------------------

def _ret(level: str, name: str, group: str) -> Metric:
    return Metric(group, (f"{level}/{name}[m5product]",))


# The evaluator (bench/eval/suite.py) names the fine-tuned head's accuracy "[finetuned_head]"; the
# result contract says "[finetune]". Read either so the table does not depend on that spelling.
ACC_FT = Metric(FINETUNE, ("cls/accuracy[finetune]", "cls/accuracy[finetuned_head]"))
NMI = Metric(PRETRAIN, ("cluster/NMI",))
PURITY = Metric(PRETRAIN, ("cluster/purity",))
RETRIEVAL_COLS = ("mAP@1", "mAP@5", "mAP@10", "Prec@1", "Prec@5", "Prec@10")

SEQUENTIAL_ROWS = (("T", "T"), ("+I", "I,T"), ("+Tab", "I,T,Tab"), ("+V", "I,T,Tab,V"), ("+A", "I,T,Tab,V,A"))

COMBINATIONS = ("I+Tab", "I+V", "I+A", "I+T", "I+T+V", "I+T+A", "I+Tab+V", "I+T+Tab", "I+T+Tab+V",
                "I+Tab+A+V", "I+T+A+V", "I+T+Tab+A", "I+T+Tab+A+V")

BASELINES = (("Imagebased", "image", "I"), ("BERT", "bert", "T"), ("VL-BERT", "vlbert", "I,T"),
             ("ViLBERT", "vilbert", "I,T"), ("VisualBERT", "visualbert", "I,T"), ("CLIP", "clip", "I,T"),
             ("UNITER", "uniter", "I,T"), ("CAPTURE", "capture", "I,T"), ("SCALE", "scale", "I,T"))

SPLIT_TITLES = {"subset": "subset", "full": "whole dataset"}


def _sequential() -> TableSpec:
    cols = (Column("Accuracy", (ACC_FT,)),) + tuple(
        Column(n, (_ret("coarse", n, PRETRAIN), _ret("coarse", n, FINETUNE))) for n in RETRIEVAL_COLS)
    sections = tuple(
        Section(split, f"SCALE, modalities added in sequence: {SPLIT_TITLES[split]}", cols,
                tuple(Row(label, CellSpec.make("scale", mods, split), label) for label, mods in SEQUENTIAL_ROWS),
                "Accuracy: fine-tuned classification head. Retrieval cells: coarse-grained, "
                "pre-trained features / fine-tuned features.")
        for split in ("subset", "full"))
    return TableSpec("sequential", "Sequential modality addition (paper table: pretrain / finetune gains)",
                     "Modalities", sections, "sequential.json")


def _combinations() -> TableSpec:
    cols = (Column("Accuracy", (ACC_FT,)),) + tuple(
        Column(n, (_ret("coarse", n, FINETUNE), _ret("fine", n, FINETUNE))) for n in RETRIEVAL_COLS)
    rows = tuple(Row(c, CellSpec.make("scale", c, "subset"), c) for c in COMBINATIONS)
    sec = Section("subset", "SCALE under modality combinations: subset", cols, rows,
                  "Accuracy: fine-tuned classification head. Retrieval cells: coarse-grained / "
                  "fine-grained, fine-tuned features.")
    return TableSpec("combinations", "Modality combinations", "Modalities", (sec,), "combinations.json")


def _baselines() -> TableSpec:
    cols = (Column("mAP@1", (_ret("coarse", "mAP@1", PRETRAIN),)), Column("Accuracy", (ACC_FT,)),
            Column("NMI", (NMI,)), Column("Purity", (PURITY,)))
    sections = tuple(
        Section(split, f"Image + text comparison: {SPLIT_TITLES[split]}", cols,
                tuple(Row(label, CellSpec.make(model, mods, split), label) for label, model, mods in BASELINES),
                "mAP@1: coarse-grained retrieval with pre-trained features. Accuracy: fine-tuned head. "
                "NMI, Purity: k-means on pre-trained features.")
        for split in ("subset", "full"))
    return TableSpec("baselines", "Baselines on image and text", "Method", sections, "baselines.json",
                     ("BERT runs on titles only (T) and Imagebased on images only (I), as in the paper.",))


ABLATIONS = (
    ("masking", "Masked entity modelling: whole table entities vs tokens", "mem_span",
     (("MEM (whole entity)", "key_or_value", "MEM"), ("token masking", "token", "token"))),
    ("table_encoder", "Title and table encoders: separate vs merged", "share_text_table",
     (("separate T / Tab encoders", False, "separate"), ("merged T+Tab encoder", True, "merged"))),
    ("harmonisation", "Modality harmonisation", "harmonize",
     (("learned (self-harmonized)", "learned", "learned"), ("feature similarity", "feature", "feature"),
      ("uniform", "uniform", "uniform"))),
    ("incomplete", "Pre-training on incomplete listings", "pretrain_incomplete",
     (("with incomplete listings", True, "with"), ("complete listings only", False, "without"))),
)


def _ablations() -> TableSpec:
    cols = (Column("Accuracy", (ACC_FT,)),
            Column("coarse mAP@1", (_ret("coarse", "mAP@1", PRETRAIN), _ret("coarse", "mAP@1", FINETUNE))),
            Column("fine mAP@1", (_ret("fine", "mAP@1", PRETRAIN), _ret("fine", "mAP@1", FINETUNE))),
            Column("NMI", (NMI,)))
    sections = []
    headline = CellSpec.make("scale", "I,T,Tab,V,A", "subset")
    for key, title, setting, variants in ABLATIONS:
        # The first variant is the model's default: the headline run answers it when its resolved
        # config confirms the setting (checked at render time, see resolved_setting).
        rows = tuple(Row(label, CellSpec.make("scale", "I,T,Tab,V,A", "subset", {setting: value}), paper,
                         default_cell=headline if i == 0 else None,
                         setting=(setting, normalize_override(value)))
                     for i, (label, value, paper) in enumerate(variants))
        sections.append(Section(key, f"Ablation: {title} (SCALE, I,T,Tab,V,A, subset)", cols, rows,
                                f"Rows set `--set {setting}=...` (the first row, the default, may be the "
                                "headline run when its recorded config confirms the setting). Accuracy: "
                                "fine-tuned head. mAP@1 cells: "
                                "pre-trained features / fine-tuned features. NMI: k-means on pre-trained features."))
    return TableSpec("ablations", "Ablations", "Variant", tuple(sections), "ablations.json")


def resolved_setting(result: Mapping[str, Any], key: str) -> str | None:
    """The normalised value of setting ``key`` a run actually used, from its resolved config.

    ``bench run`` records the model config, the training config and the pipeline switches under
    ``result["config"]``; an explicit override in the cell wins (it is what was asked for).
    """
    ov = ((result.get("cell") or {}).get("overrides") or {})
    if key in ov:
        return normalize_override(ov[key])
    cfg = result.get("config") or {}
    for part in ("model", "pipeline", "train"):
        sub = cfg.get(part)
        if isinstance(sub, Mapping) and key in sub:
            return normalize_override(sub[key])
    return None


TABLES: dict[str, TableSpec] = {t.name: t for t in (_sequential(), _combinations(), _baselines(), _ablations())}


def get_table(name: str) -> TableSpec:
    """The spec called ``name``; an unknown name raises KeyError naming the known ones."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; tables: {', '.join(TABLES)}") from None


def table_names() -> list[str]:
    return list(TABLES)


def select_tables(names: Iterable[str] | None) -> list[TableSpec]:
    names = list(names or [])
    return [get_table(n) for n in names] if names else list(TABLES.values())


# --- published numbers -------------------------------------------------------------------------

class PaperError(ValueError):
    pass


def load_paper(spec: TableSpec, paper_dir: str | Path | None = None) -> dict[str, Any] | None:
    """The published numbers for ``spec`` (the parsed ``leaderboards/paper`` JSON), or None."""
    if not spec.paper_file:
        return None
    path = Path(paper_dir or PAPER_DIR) / spec.paper_file
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PaperError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    for k in ("source", "status", "sections"):
        if k not in doc:
            raise PaperError(f"{path}: missing {k!r}")
    return doc


def paper_value(doc: Mapping[str, Any] | None, section: str, row: str | None, column: str,
                parts: int) -> tuple[float | None, ...] | None:
    """Published value(s) of one cell: a tuple with one entry per column part, or None if unreported."""
    if doc is None or row is None:
        return None
    v = ((doc.get("sections") or {}).get(section) or {}).get("rows", {}).get(row, {}).get(column)
    if v is None:
        return None
    vals = tuple(v) if isinstance(v, list) else (v,)
    if len(vals) != parts:
        raise PaperError(f"paper {doc.get('table')}/{section}/{row}/{column}: {len(vals)} values, expected {parts}")
    return tuple(float(x) if x is not None else None for x in vals)
