"""What a run measures: the subjects (each LKCA model plus its size-matched ViT), the conversion
cells (subject x backend x form x recipe) and the timed variants."""

from __future__ import annotations

from dataclasses import dataclass

from .settings import TARGET_SUBJECT, Settings


@dataclass
class Subject:
    key: str            # "lkca-1m@32"
    name: str           # zoo name
    image_size: int
    family: str         # lkca | vit
    pretrained: bool    # shipped trained weights used
    pair: str           # the LKCA subject this one is compared with (itself for LKCA)
    macs: int = 0       # nominal (the model's function)
    fused_macs: int = 0  # what form ``fused`` executes (one dim x dim matmul per block fewer)
    params: int = 0
    patch_size: int = 0

    def executed_macs(self, form: str | None) -> int:
        return self.fused_macs if form == "fused" and self.family == "lkca" else self.macs

    @property
    def trained(self) -> bool:
        return self.pretrained

    def measure(self, model) -> None:
        """Fill in the figures of the built model."""
        from lkca_edge.models_config import count_macs

        self.macs, self.params, self.patch_size = model.macs(), model.num_params(), model.config.patch_size
        self.fused_macs = count_macs(model.config, "fused")


@dataclass
class Cell:
    id: str
    subject: str
    family: str
    backend: str
    form: str | None
    recipe: str
    precision: str
    default_recipe: bool
    default_form: bool
    # ok | gate-failed | failed | convert-only | unavailable ("ungated": runs made before the
    # library gated untrained models, read by --reuse)
    status: str = "pending"
    stage: str | None = None  # where a failure happened: convert | load | run | gate
    reason: str | None = None
    artifact: str | None = None
    size_bytes: int | None = None
    convert_s: float | None = None    # the backend's convert() only (manifest)
    export_s: float | None = None     # export_model wall time: convert + manifest
    validate_s: float | None = None
    load_at_convert: list | None = None
    cached: bool = False
    validation: dict | None = None
    details: dict | None = None

    @property
    def timeable(self) -> bool:
        return self.status in ("ok", "ungated", "gate-failed") and self.artifact is not None

    @property
    def eligible(self) -> bool:
        """May count as a 'best' artifact or a default export: validated and not wrong."""
        return self.status in ("ok", "ungated")

    def restore(self, record: dict) -> None:
        """Take a saved record's results (a cache record or a reused run's cell)."""
        for k, v in record.items():
            if k in Cell.__dataclass_fields__ and k != "id":
                setattr(self, k, v)
        self.cached = True


def matched_vit(lkca_name: str) -> str:
    """The softmax ViT whose parameter count is closest to the LKCA model's."""
    from lkca_edge.models_config import count_params
    from lkca_edge.zoo import get_spec, list_models

    target = count_params(get_spec(lkca_name).config)
    vits = [s for s in list_models() if s.family == "vit"]
    return min(vits, key=lambda s: abs(count_params(s.config) - target)).name


def plan_subjects(settings: Settings) -> list[Subject]:
    from lkca_edge.errors import UserError
    from lkca_edge.zoo import get_spec

    subjects: dict[str, Subject] = {}
    for item in settings.models:
        name, _, px = item.partition("@")
        spec = get_spec(name)
        if spec.family != "lkca":
            raise UserError(f"--models takes LKCA models (the matched ViT is added): {item}")
        size = int(px) if px else spec.config.image_size
        pretrained = bool(spec.weights) and size == spec.config.image_size
        key = f"{spec.name}@{size}"
        subjects.setdefault(key, Subject(key, spec.name, size, "lkca", pretrained, key))
        if settings.vit:
            vit = matched_vit(spec.name)
            vkey = f"{vit}@{size}"
            subjects.setdefault(vkey, Subject(vkey, vit, size, "vit", False, key))
    return list(subjects.values())


def build_model(subject: Subject, form: str | None = None):
    from lkca_edge import create_model

    if subject.pretrained:
        model = create_model(subject.name, pretrained=True, form=form)
    else:
        model = create_model(subject.name, image_size=subject.image_size, form=form)
    return model.eval()


def _recipes(backend, subject: Subject, settings: Settings, convert_only: bool) -> list[tuple]:
    """(precision, recipe name, is the default) of one backend for one subject."""
    recipes = []
    for precision in ("fp32", "int8"):
        default = backend.default_recipes.get(precision)
        if default is None:
            continue
        every = settings.recipes == "all" or (settings.recipes == "target"
                                               and subject.pair == TARGET_SUBJECT)
        names = [default] if (not every or convert_only) else \
            [n for n, r in backend.recipes.items() if r.precision == precision]
        recipes += [(precision, n, n == default) for n in names]
    return recipes


def plan_cells(subjects: list[Subject], settings: Settings) -> list[Cell]:
    from lkca_edge.converters import get_backend
    from lkca_edge.forms import default_export_form

    cells = []
    for subj in subjects:
        for bname in settings.backends:
            backend = get_backend(bname)
            convert_only = backend.runnable() is not None
            if convert_only and (subj.key != TARGET_SUBJECT):
                continue  # a backend that cannot run here: only the default-matrix cells
            forms = settings.forms if subj.family == "lkca" else [None]
            for precision, rname, is_default in _recipes(backend, subj, settings, convert_only):
                rule = default_export_form(backend.name, precision)
                for form in forms:
                    if convert_only and form is not None and form != rule:
                        continue
                    cid = f"{subj.key}/{backend.name}/{form or '-'}/{rname}"
                    cells.append(Cell(cid, subj.key, subj.family, backend.name, form, rname,
                                      precision, is_default, form is None or form == rule))
    return cells


def build_variants(subjects: list[Subject], cells: list[Cell], forms: list[str]) -> list[dict]:
    """Torch eager of every measured form (conv = the baseline) and every timeable artifact."""
    variants = []
    lkca_forms = ["conv"] + [f for f in forms if f != "conv"]
    for s in subjects:
        for form in (lkca_forms if s.family == "lkca" else (None,)):
            variants.append({"id": f"{s.key}/torch/{form or '-'}/fp32", "kind": "torch",
                             "subject": s.key, "backend": "torch", "form": form,
                             "recipe": "eager", "precision": "fp32"})
    for c in cells:
        if c.timeable:
            variants.append({"id": c.id, "kind": "artifact", "subject": c.subject,
                             "backend": c.backend, "form": c.form, "recipe": c.recipe,
                             "precision": c.precision, "artifact": c.artifact})
    return variants


def baseline_id(subject_key: str, subjects: dict[str, Subject]) -> str:
    """The paper's form in PyTorch eager fp32 of the LKCA model this subject is compared with."""
    return f"{subjects[subject_key].pair}/torch/conv/fp32"
