"""The strict model registry.

Entries are data: a name, the import path of the adapter class, and the modalities it consumes.
Adapters are imported on first use, so ``bench ls models`` stays fast and one broken adapter
cannot break the others. Duplicate names are errors; an unknown name answers with the list and the
closest match; a modality request an adapter cannot serve is refused before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.modalities import ModalitySet
from bench.registries import Registry, RegistryError, load_target  # noqa: F401 - RegistryError is public here


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


def get(name: str) -> ModelEntry:
    return _REGISTRY.lookup(name)


def names() -> list[str]:
    return list(_REGISTRY)


def entries() -> list[ModelEntry]:
    return list(_REGISTRY.values())


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
