"""The candidates of a comparison: regularizer families swept over strengths."""

import dataclasses

import tfreg
from tfreg.cli import UsageError

# The loss rows' strengths: the proximal rows run on the same grids, since
# the proximal step is taken in Adam's own metric (a strength means about
# the same on both paths).
L1_STRENGTHS = (1e-5, 1e-4, 3e-4, 1e-3)
GROUP_STRENGTHS = (1e-4, 1e-3, 3e-3, 1e-2)
# How many strengths of each family run: "quick" one, "default" the family's
# default subset, "all" every value listed.
STRENGTHS = ("quick", "default", "all")


@dataclasses.dataclass(frozen=True)
class Family:
    """A regularizer swept over strengths.

    `source` is a class name that `tfreg.get` resolves, or "priors.Name" for a
    class of `tfreg.priors` (built with `num_examples` = training rows).
    `parameter` is the constructor argument that sets the strength; `values`
    run from weak to strong, `default` indexes the ones run by default and
    `quick` the one run with --quick. `mode` "proximal" applies the penalty
    in the optimizer (`tfreg.optimizers.Regularized(mode="proximal")`)
    instead of the loss. `shared`: the parameter takes a `tfreg.Strength`,
    so that one compiled model serves every strength of the family.
    """
    name: str
    source: str = None
    parameter: str = None
    values: tuple = (None,)
    default: tuple = (0,)
    quick: int = 0
    aliases: tuple = ()
    mode: str = "loss"
    shared: bool = False

    @property
    def is_prior(self):
        return bool(self.source) and self.source.startswith("priors.")

    def chosen_values(self, strengths):
        if strengths == "all":
            return self.values
        if strengths == "quick":
            return (self.values[self.quick],)
        return tuple(self.values[i] for i in self.default)


# Strengths for the default regime (a few hundred training rows, two wide
# hidden layers, Adam), weak to strong: on digits the weaker and on
# diabetes the stronger of a default pair fit best. A prior's penalty is
# -log p(w) / num_examples, so a smaller scale pulls harder (Horseshoe
# scale 1 already empties the digits network).
FAMILIES = (
    Family("none"),
    Family("l2", "L2", "l2", (1e-4, 1e-3, 3e-3, 1e-2), (1, 3), 1,
           shared=True),
    Family("l1", "L1", "l1", L1_STRENGTHS, (1, 3), 1, shared=True),
    Family("group_lasso", "GroupLasso", "factor", GROUP_STRENGTHS,
           (0, 2), 1, aliases=("grouplasso",), shared=True),
    Family("l1_proximal", "L1", "l1", L1_STRENGTHS, (3,), 3,
           mode="proximal", shared=True),
    Family("group_lasso_proximal", "GroupLasso", "factor", GROUP_STRENGTHS,
           (1,), 1, mode="proximal", shared=True),
    Family("laplace", "priors.Laplace", "scale", (30.0, 10.0, 3.0, 1.0),
           (0, 2), 1),
    Family("horseshoe", "priors.Horseshoe", "scale", (100.0, 10.0, 1.0, 0.1),
           (0,), 0),
    Family("spike_and_slab", "priors.SpikeAndSlab", "slab_scale",
           (3.0, 1.0, 0.3, 0.1), (1,), 1,
           aliases=("spikeandslab", "spike_slab")),
)
DEFAULT_REGULARIZERS = tuple(family.name for family in FAMILIES)


@dataclasses.dataclass
class Candidate:
    """One regularizer at one strength, trained once per seed."""
    family: str
    setting: str
    make: object  # () -> regularizer or None
    config: object = None
    mode: str = "loss"
    # A shared family's Strength (one per family and dataset) and the value
    # this candidate gives it.
    strength: object = None
    value: float = None

    @property
    def label(self):
        return label(self.family, self.setting)


def label(family, setting):
    """How a candidate is named in progress lines and reports."""
    return family if setting == "-" else f"{family} {setting}"


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
    """Comma-separated names -> list of Family (or a registered tfreg name
    at its default arguments); `none` always comes first."""
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
            family = Family(raw.strip(), raw.strip())
        if family not in chosen:
            chosen.append(family)
    if not chosen:
        raise UsageError("--regularizers is empty")
    # The verdict compares every candidate with `none`.
    return [FAMILIES[0]] + [f for f in chosen if f is not FAMILIES[0]]


def _resolve_class(family):
    """The class behind `family.source`."""
    if family.is_prior:
        return getattr(tfreg.priors, family.source.split(".", 1)[1])
    return type(tfreg.get(family.source))


def candidates(families, num_examples, strengths="default"):
    """The candidates for `families`, and notes on strengths a class rejects."""
    if strengths not in STRENGTHS:
        raise UsageError(
            f"unknown strengths {strengths!r}; expected one of {STRENGTHS}")
    runs, notes = [], []
    for family in families:
        if family.source is None:
            runs.append(Candidate(family.name, "-", lambda: None))
            continue
        cls = _resolve_class(family)
        values = family.chosen_values(strengths)
        strength = (tfreg.Strength(values[0], name=family.name)
                    if family.shared else None)
        for value in values:
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
            if strength is not None:
                kwargs[family.parameter] = strength
            setting = (f"{family.parameter}={value:g}"
                       if family.parameter else "defaults")
            runs.append(Candidate(
                family.name, setting,
                lambda cls=cls, kwargs=kwargs: cls(**kwargs),
                config=tfreg.serialize(regularizer), mode=family.mode,
                strength=strength, value=value))
    return runs, notes
