"""The candidates of a comparison: regularizer families swept over strengths."""

import dataclasses

import tfreg
from tfreg.cli import UsageError


@dataclasses.dataclass(frozen=True)
class Family:
    """A regularizer swept over strengths.

    `source` is a class name that `tfreg.get` resolves, or "priors.Name" for a
    class of `tfreg.priors` (built with `num_examples` = training-set size).
    `parameter` is the constructor argument that sets the strength.
    """
    name: str
    source: str = None
    parameter: str = None
    values: tuple = (None,)
    aliases: tuple = ()

    @property
    def is_prior(self):
        return bool(self.source) and self.source.startswith("priors.")


FAMILIES = (
    Family("none"),
    Family("l2", "L2", "l2", (1e-4, 1e-3, 1e-2)),
    Family("l1", "L1", "l1", (1e-5, 1e-4, 1e-3)),
    Family("group_lasso", "GroupLasso", "factor", (1e-4, 1e-3, 1e-2),
           aliases=("grouplasso",)),
    # Priors: smaller scales pull harder toward zero.
    Family("laplace", "priors.Laplace", "scale", (0.03, 0.3, 3.0)),
    Family("horseshoe", "priors.Horseshoe", "scale", (0.01, 0.1, 1.0)),
    Family("spike_and_slab", "priors.SpikeAndSlab", "slab_scale",
           (0.03, 0.3, 3.0), aliases=("spikeandslab", "spike_slab")),
)
DEFAULT_REGULARIZERS = tuple(family.name for family in FAMILIES)
@dataclasses.dataclass
class Candidate:
    """One run: a family at one strength."""
    family: str
    setting: str
    make: object  # () -> regularizer or None
    config: object = None

def _normalized(name):
    return name.strip().lower().replace("-", "_")


def _family_index():
    index = {}
    for family in FAMILIES:
        for name in (family.name, *family.aliases):
            index[_normalized(name)] = family
            index[_normalized(name).replace("_", "")] = family
    return index


def parse_regularizers(text):
    """Comma-separated names -> list of Family or registered tfreg names."""
    if text is None:
        return list(FAMILIES)
    index = _family_index()
    chosen = []
    for raw in text.split(","):
        name = _normalized(raw)
        if not name:
            continue
        family = index.get(name) or index.get(name.replace("_", ""))
        if family is None:
            try:
                tfreg.get(raw.strip())
            except (ValueError, TypeError):
                raise UsageError(
                    f"unknown regularizer {raw.strip()!r}; expected one of "
                    f"{', '.join(DEFAULT_REGULARIZERS)} or a tfreg "
                    "regularizer name") from None
            family = Family(raw.strip(), raw.strip(), None, (None,))
        if family not in chosen:
            chosen.append(family)
    if not chosen:
        raise UsageError("--regularizers is empty")
    return chosen


def _resolve_class(family):
    """The class behind `family.source`."""
    if family.is_prior:
        return getattr(tfreg.priors, family.source.split(".", 1)[1])
    return type(tfreg.get(family.source))


def _format_value(value):
    return f"{value:g}"


def candidates(families, num_examples):
    """The runs for `families`, and notes on strengths a class rejects."""
    runs, notes = [], []
    for family in families:
        if family.source is None:
            runs.append(Candidate(family.name, "-", lambda: None))
            continue
        cls = _resolve_class(family)
        for value in family.values:
            kwargs = {}
            if family.parameter is not None:
                kwargs[family.parameter] = value
            if family.is_prior:
                kwargs["num_examples"] = num_examples
            try:
                regularizer = cls(**kwargs)
            except (TypeError, ValueError) as error:
                notes.append(f"skipped {family.name} {kwargs}: {error}")
                continue
            setting = (f"{family.parameter}={_format_value(value)}"
                       if family.parameter else "defaults")
            runs.append(Candidate(
                family.name, setting,
                lambda cls=cls, kwargs=kwargs: cls(**kwargs),
                config=tfreg.serialize(regularizer)))
    return runs, notes
