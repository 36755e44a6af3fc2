"""`get`, `serialize`, `deserialize` and the registry that serves all three.

One table maps every accepted name to a class: the class name ('L1L2'), its
snake_case name ('l1_l2'), the Keras-registered name ('tfreg>L1L2') and any
alias (Keras' 'orthogonal_regularizer'). Deserializing looks names up in this
table, then in Keras' own registry of classes registered with
`register_keras_serializable` and the `custom_objects` in scope: a config
never imports a module or calls anything but a registered class's
`from_config`.
"""

import re

from tfreg import _checks
from tfreg import _keras
from tfreg import base
from tfreg import validation

__all__ = ["add_preset", "check_reloadable", "deserialize", "get",
           "register", "registered_classes", "registered_names", "serialize"]

_REGISTRY = {}
# Names that mean a preset instance rather than the class's defaults.
_PRESETS = {}

# tf_keras adds "shared_object_id" to nested configs in SavedModel saves; it
# only deduplicates objects and is ignored here.
_OUTER_KEYS = frozenset({"module", "class_name", "config", "registered_name",
                         "shared_object_id"})


def _snake_case(name):
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def _qualified(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def register(cls=None, *, aliases=()):
    """Registers a `tfreg.Regularizer` subclass with Keras and with `tfreg.get`.

    Keras then finds it in saved models as `tfreg>ClassName` without
    `custom_objects`, and `tfreg.get` accepts its class name, its snake_case
    name and `aliases`. Use as `@tfreg.register` or
    `@tfreg.register(aliases=("name",))`.
    """
    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, base.Regularizer)):
            raise TypeError(
                f"Expected a subclass of tfreg.Regularizer. Received: cls={cls!r}")
        names = (cls.__name__, _snake_case(cls.__name__),
                 f"{_keras.PACKAGE}>{cls.__name__}", *aliases)
        for name in names:
            previous = _REGISTRY.get(name)
            if previous is not None and _qualified(previous) != _qualified(cls):
                raise ValueError(
                    f"The name {name!r} is already registered to "
                    f"{_qualified(previous)}.")
            _REGISTRY[name] = cls
        return _keras.register(cls)

    return decorate if cls is None else decorate(cls)


def add_preset(name, cls, **kwargs):
    """Makes the string `name` mean `cls(**kwargs)` in `tfreg.get`."""
    _PRESETS[name] = (cls, kwargs)


def registered_classes():
    """Every registered class, each once, sorted by name."""
    return sorted({id(cls): cls for cls in _REGISTRY.values()}.values(),
                  key=lambda cls: cls.__name__)


def registered_names():
    """Every name `tfreg.get` accepts as a string, sorted."""
    return sorted(set(_REGISTRY) | set(_PRESETS))


def _lookup(name, custom_objects=None):
    """tfreg's class of that name, else a Keras regularizer class that Keras'
    registry or `custom_objects` (also a `custom_object_scope`) maps it to."""
    cls = _REGISTRY.get(name) or _REGISTRY.get(name.lower())
    if cls is None:
        found = _keras.keras.saving.get_registered_object(
            name, custom_objects=custom_objects)
        if isinstance(found, type) and issubclass(
                found, _keras.Regularizer) and not _is_abstract(found):
            cls = found
    if cls is None:
        raise ValueError(
            f"Unknown regularizer: {validation.short_repr(name)}. Expected "
            f"one of {registered_names()}, or a regularizer class registered "
            "with Keras (`keras.saving.register_keras_serializable`) or "
            "given in `custom_objects`.")
    return cls


def serialize(regularizer):
    """Returns a JSON-compatible dict describing `regularizer`.

    This is Keras' own `serialize_keras_object`, so the dict is the one Keras
    writes into saved models: for tfreg classes `{"module": None,
    "class_name": "L1", "config": {...}, "registered_name": "tfreg>L1"}`.
    """
    return _keras.keras.saving.serialize_keras_object(regularizer)


def deserialize(config, custom_objects=None):
    """Builds a regularizer from a name or a dict made by `serialize`.

    Resolves registered tfreg classes, then Keras-registered regularizer
    classes and those in `custom_objects` (a dict name -> class); the
    "module" entry is never imported. Unknown names, unknown keys and
    invalid values raise `ValueError` or `TypeError`.
    """
    if isinstance(config, str):
        if config in _PRESETS or config.lower() in _PRESETS:
            cls, kwargs = _PRESETS.get(config) or _PRESETS[config.lower()]
            return cls(**kwargs)
        return _lookup(config, custom_objects)()
    if not isinstance(config, dict):
        raise TypeError(validation.message(
            "config", config, "a regularizer name (str) or a config dict"))
    _checks.known_keys(config, sorted(_OUTER_KEYS), "a regularizer config")
    for key in ("module", "registered_name"):
        if not isinstance(config.get(key), (str, type(None))):
            raise TypeError(
                f"Expected a string or None as `{key}` in a regularizer "
                f"config. Received: {key}="
                f"{validation.short_repr(config[key])}")
    name = config.get("registered_name") or config.get("class_name")
    if not isinstance(name, str):
        raise TypeError(
            "Expected a string `class_name` in a regularizer config. "
            "Received: class_name="
            f"{validation.short_repr(config.get('class_name'))}")
    cls = _lookup(name, custom_objects)
    if "config" not in config:
        # As `serialize` writes it; tf_keras refuses it too, Keras 3 would
        # build its own class of that name.
        raise ValueError(
            'Expected a "config" entry in a regularizer config ({} for the '
            f"defaults). Received: config={validation.short_repr(config)}")
    # None ("config": null) is refused by `from_config`, not taken for {}.
    return cls.from_config(config["config"])


def check_reloadable(name, regularizer):
    """Raises TypeError naming `name` unless `deserialize(serialize(
    regularizer))` rebuilds a regularizer of the same class."""
    reason = None
    try:
        clone = deserialize(serialize(regularizer))
    except (TypeError, ValueError, NotImplementedError) as error:
        reason = str(error) or type(error).__name__
    else:
        if type(clone) is not type(regularizer):
            reason = f"it loads as {type(clone).__name__}"
    if reason is not None:
        raise TypeError(validation.message(
            name, regularizer,
            "a regularizer that loads again from its config: a tfreg or "
            "Keras regularizer, or a class registered with Keras "
            "(`keras.saving.register_keras_serializable`)",
            note=f" ({reason})"))


def _is_abstract(cls):
    """Keras' base class, or a tfreg class with no `penalty` of its own."""
    return cls is _keras.Regularizer or (
        issubclass(cls, base.Regularizer)
        and cls.penalty is base.Regularizer.penalty)


def get(identifier):
    """Resolves a regularizer the way `keras.regularizers.get` does.

    None gives None; a string or dict is deserialized; a regularizer class
    (a subclass of Keras' `Regularizer` that computes a penalty: tfreg's or
    Keras' own) is instantiated with its defaults, as Keras 3 does; a
    regularizer or any other callable is returned as it is. Any other class,
    and the abstract `tfreg.Regularizer`, raise `TypeError`; anything else
    raises Keras' ValueError, "Could not interpret regularizer identifier:
    ...".
    """
    if identifier is None:
        return None
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier)
    if isinstance(identifier, type):
        if not issubclass(identifier, _keras.Regularizer) or _is_abstract(
                identifier):
            raise TypeError(validation.message(
                "identifier", identifier,
                f"a regularizer class: a subclass of "
                f"{_keras.keras.__name__}.regularizers.Regularizer that "
                "computes a penalty (not an abstract base)"))
        return identifier()
    if callable(identifier):
        return identifier
    raise ValueError(
        "Could not interpret regularizer identifier: "
        f"{validation.short_repr(identifier)}. Expected None, a str, a dict "
        "or a callable.")
