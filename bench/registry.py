"""The strict model registry.

Entries are data: a name, the import path of the adapter class, and the modalities it consumes.
Adapters are imported on first use, so ``bench ls models`` stays fast and one broken adapter
cannot break the others. Duplicate names are errors; an unknown name answers with the list and the
closest match; a modality request an adapter cannot serve is refused before any work starts.

Besides the names registered here, a model can be: one of a frozen encoder family
(``hf:NAME_OR_PATH``, ``open_clip:ARCH[@PRETRAINED]``, ``timm:NAME[@FILE]``; :data:`FAMILIES`), an
adapter installed by another package under the entry-point group ``m5bench.models``, or any
adapter class named as ``package.module:Class``. Plugins declare ``consumes`` on the class.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from bench.modalities import ModalitySet
from bench.registries import Registry, RegistryError, load_target


class ModalityNotSupported(ValueError):
    pass


@dataclass(frozen=True)
class ModelEntry:
    name: str
    target: str  # "module:Class"
    consumes: ModalitySet  # every modality the model can use
    requires: ModalitySet  # modalities that must be in any request
    paper_name: str
    summary: str
    #: whether the adapter class pretrains, as far as it is known without importing it: ``False``
    #: for frozen encoder families and for plugins whose class says so (their class is imported to
    #: be checked anyway); registered models are imported only when run, so the class has the last word
    pretrains: bool = True

    def check(self, requested: ModalitySet) -> None:
        """Raise :class:`ModalityNotSupported` unless ``requested`` is servable."""
        extra = ModalitySet(m for m in requested if m not in self.consumes)
        missing = ModalitySet(m for m in self.requires if m not in requested)
        if extra or missing:
            why = []
            if extra:
                why.append(f"it cannot consume {extra}")
            if missing:
                why.append(f"it needs {missing}")
            raise ModalityNotSupported(
                f"{self.paper_name} ({self.name}) cannot run on modalities {requested}: {' and '.join(why)}. "
                f"{self.paper_name} consumes {self.consumes}"
                + (f" and requires {self.requires}." if self.requires else " (any non-empty subset).")
            )

    def load(self) -> type:
        return load_target(self.target)


_REGISTRY: Registry[ModelEntry] = Registry("model")


# --- frozen encoder families (bench/encoders): ``PREFIX:ARGUMENT`` names one released model -------

@dataclass(frozen=True)
class Family:
    target: str  # "module:Class" of the family's adapter; ``Class.bind(argument)`` is one model
    consumes: str
    paper_name: str
    argument: str  # what follows the prefix, as help text
    summary: str

    @property
    def plain_argument(self) -> str:
        """``argument`` without brackets (``ARCH or ARCH@PRETRAINED``), for one-line messages that a
        console would otherwise read as markup."""
        base, sep, opt = self.argument.partition("[")
        return f"{base} or {base}{opt.rstrip(']')}" if sep else base


FAMILIES: dict[str, Family] = {
    "hf": Family("bench.encoders.hf:HFEncoder", "T,Tab", "Hugging Face", "NAME_OR_PATH",
                 "frozen transformers AutoModel, own tokenizer, mean (or [CLS]) pooling; Tab as 'key: value; ...'"),
    "open_clip": Family("bench.encoders.openclip:OpenClipEncoder", "I,T", "OpenCLIP", "ARCH[@PRETRAINED]",
                        "frozen open_clip model, own transforms and tokenizer; PRETRAINED: a tag or a local file"),
    "timm": Family("bench.encoders.timm:TimmEncoder", "I,V", "timm", "NAME[@FILE]",
                   "frozen timm backbone, timm's data config and transforms; V: mean over sampled frames"),
}


@dataclass(frozen=True)
class FamilyEntry(ModelEntry):
    """One model of a family; :meth:`load` gives the family's class bound to ``argument``."""

    argument: str = ""

    def load(self) -> type:
        return super().load().bind(self.argument)


def family_entry(prefix: str, argument: str) -> FamilyEntry:
    """The entry of ``PREFIX:ARGUMENT``; an empty argument is refused naming the expected form."""
    fam = FAMILIES[prefix]
    if not argument.strip():
        raise RegistryError(f"model {prefix + ':'!r} needs a model after the prefix: {prefix}:{fam.plain_argument}")
    mods = ModalitySet.parse(fam.consumes)
    return FamilyEntry(name=f"{prefix}:{argument}", target=fam.target, consumes=mods, requires=ModalitySet(),
                       paper_name=f"{fam.paper_name} {argument}", summary=fam.summary, argument=argument,
                       pretrains=False)


def register(
    name: str, target: str, consumes: str, requires: str = "", *, paper_name: str, summary: str
) -> ModelEntry:
    entry = ModelEntry(
        name=name,
        target=target,
        consumes=ModalitySet.parse(consumes),
        requires=ModalitySet.parse(requires) if requires else ModalitySet(),
        paper_name=paper_name,
        summary=summary,
    )
    return _REGISTRY.add(name, entry)


# --- plugins: the entry-point group ``m5bench.models`` and ``--model package.module:Class`` ---------

#: The entry-point group third-party packages declare their adapters in (``name = "pkg.mod:Class"``).
ENTRY_POINT_GROUP = "m5bench.models"


def plugin_targets() -> dict[str, str]:
    """``{name: "module:Class"}`` of every installed entry point of :data:`ENTRY_POINT_GROUP`
    (read at each call, so a package installed into the running interpreter's path is seen)."""
    from importlib.metadata import entry_points

    out: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY or ep.name in out:
            raise RegistryError(f"model {ep.name!r} of entry point {ep.value} is already registered "
                                f"(by {_REGISTRY[ep.name].target if ep.name in _REGISTRY else out[ep.name]})")
        out[ep.name] = ep.value
    return out


def plugin_entry(name: str, target: str) -> ModelEntry:
    """The entry of an adapter class outside this repository, held to the same contract: a subclass
    of :class:`bench.adapter.Adapter` declaring ``consumes`` (and optionally ``requires``,
    ``paper_name``, ``summary``) as class attributes."""
    from bench.adapter import Adapter

    try:
        cls = load_target(target)
    except (ImportError, AttributeError, ValueError) as exc:
        raise RegistryError(f"model {name!r}: cannot load {target} ({type(exc).__name__}: {exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise RegistryError(f"model {name!r}: {target} is not a subclass of bench.adapter.Adapter")
    consumes = getattr(cls, "consumes", None)
    if not isinstance(consumes, str) or not consumes.strip():
        raise RegistryError(f"model {name!r}: {target} declares no modalities; give the class "
                            f"consumes = \"I,T\" (and requires = \"...\" if some are mandatory)")
    requires = getattr(cls, "requires", "") or ""
    doc = (cls.__doc__ or "").strip().splitlines()
    return ModelEntry(name=name, target=target, consumes=ModalitySet.parse(consumes),
                      requires=ModalitySet.parse(requires) if requires else ModalitySet(),
                      paper_name=getattr(cls, "paper_name", cls.__name__),
                      summary=getattr(cls, "summary", doc[0] if doc else "plugin adapter"),
                      pretrains=bool(getattr(cls, "pretrains", True)))


def _module_exists(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def get(name: str) -> ModelEntry:
    """The entry of ``name``: a registered model, an installed plugin, one model of a frozen encoder
    family (``PREFIX:ARGUMENT``) or an adapter class named as ``package.module:Class``."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    plugins = plugin_targets()
    if name in plugins:
        return plugin_entry(name, plugins[name])
    prefix, sep, arg = name.partition(":")
    if sep and prefix in FAMILIES:
        return family_entry(prefix, arg)
    if sep and prefix and arg and all(p.isidentifier() for p in prefix.split(".") + [arg]) and _module_exists(prefix):
        return plugin_entry(name, name)  # --model package.module:Class
    known = list(_REGISTRY) + list(plugins) + [f"{p}:{arg or 'NAME'}" for p in FAMILIES]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    families = ", ".join(f"{p}:{f.plain_argument}" for p, f in FAMILIES.items())
    raise RegistryError(f"unknown model {name!r}.{hint} Registered: {', '.join(list(_REGISTRY) + list(plugins))}; "
                        f"frozen encoder families: {families}; or an adapter class as package.module:Class")


def names() -> list[str]:
    """The registered models, then the installed plugins (entry points)."""
    return list(_REGISTRY) + list(plugin_targets())


def entries() -> list[ModelEntry]:
    return list(_REGISTRY.values()) + [plugin_entry(n, t) for n, t in plugin_targets().items()]


def create_model(name: str, modalities: ModalitySet | str, spec, preset: str = "tiny", **overrides):
    """Build a registered adapter for ``modalities`` from a preset (the ``create_model`` factory)."""
    entry = get(name)
    mods = modalities if isinstance(modalities, ModalitySet) else ModalitySet.parse(modalities)
    entry.check(mods)
    cls = entry.load()
    config = cls.config_cls.preset(preset, **overrides)
    return cls(config, spec, mods)


# The nine models of the paper's comparison. Order is the paper's table order.
register("scale", "scale.model:Scale", "I,T,Tab,V,A", paper_name="SCALE",
         summary="five unimodal encoders + joint co-transformer, self-harmonized contrastive + masked tasks")
register("bert", "baselines.bert:Bert", "T,Tab", "T", paper_name="BERT",
         summary="title-only transformer, MLM (table optional as segment B)")
register("image", "baselines.image:ImageOnly", "I", "I", paper_name="Imagebased",
         summary="region transformer, masked region regression")
register("vilbert", "baselines.vilbert:ViLBert", "I,T", "I,T", paper_name="ViLBERT",
         summary="two streams with co-attention, MLM + masked regions + ITM")
register("clip", "baselines.clip:Clip", "I,T", "I,T", paper_name="CLIP",
         summary="two towers, symmetric InfoNCE with learnable temperature")
register("vlbert", "baselines.vlbert:VLBert", "I,T", "I,T", paper_name="VL-BERT",
         summary="single stream, visual feature on every token, MLM + masked region prediction")
register("visualbert", "baselines.visualbert:VisualBert", "I,T", "I,T", paper_name="VisualBERT",
         summary="single stream, visual segment/position embeddings, MLM + ITM")
register("uniter", "baselines.uniter:Uniter", "I,T", "I,T", paper_name="UNITER",
         summary="single stream, conditional masking, MLM + MRFR + ITM (+ optional OT)")
register("capture", "baselines.capture:Capture", "I,T", "I,T", paper_name="CAPTURE",
         summary="unimodal encoders + NT-Xent, co-attention, pre-LN cross encoder")
