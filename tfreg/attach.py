"""`apply` and `remove`: regularizers on the weights of an already-built model.

Keras reads `kernel_regularizer` once, when a layer builds its weights, so
setting `layer.kernel_regularizer = ...` on a built layer does nothing. These
functions attach a regularizer to the weights themselves, in the way each
Keras generation computes `model.losses`:

- Keras 3 computes weight penalties from `variable.regularizer` every time
  `layer.losses` is read, so `apply` sets that attribute.
- tf_keras keeps one zero-argument callable per regularized weight in the
  layer's callable losses, so `apply` adds one through `layer.add_loss`: an
  object holding the regularizer and that one variable (no closure that could
  late-bind the loop's last layer), and removes the callable that was there
  before for the same variable.

Weights are named by their path in the model: the names of the layers from
the model down to the layer that owns the weight, then the weight's name
("dense/kernel" for a layer of the model itself, "inner/dense/kernel" inside
a nested model "inner", "bidirectional/forward_lstm/lstm_cell/kernel"). A
sibling layer or weight that repeats an earlier one's name gets "#1", "#2",
... appended, so every weight has its own path.

Saving: a regularizer comes back with a loaded model only if the model's
config (what `.keras`, tf_keras' `.h5` and SavedModel write) carries it to
that weight. Usually the layer that owns the weight has the constructor
argument of the same name (`kernel_regularizer` for "kernel",
`recurrent_regularizer` for "recurrent_kernel"), and `apply` sets it. Some
layers are not saved themselves but rebuilt by their parent from the parent's
config (the query/key/value layers of MultiHeadAttention; under tf_keras the
forward and backward layers of Bidirectional, rebuilt from the wrapped
layer's config). Then the argument that saves the weight's regularizer sits
on the parent (or on a layer its config holds) and covers several weights
together; `apply` sets it when all of those weights have the same
regularizer. Nothing is assumed from class names: an argument counts only
if the model's config shows a marker set in it, and the weights a parent's
argument covers are those that get the marker when the parent is rebuilt
from its config. `apply` returns, per weight, whether its regularizer is
saved; `remove` warns when a removal cannot be saved.

A model that was already trained or evaluated has its compiled train and test
functions dropped, so the next `fit` or `evaluate` traces again and includes
the new penalties.
"""

import collections
import functools
import inspect
import re
import warnings

import tensorflow as tf

from tfreg import _keras
from tfreg import serialization

_KERNEL_NAMES = ("embeddings",)
# What `get_config` raises for a layer or model that cannot be configured.
_CONFIG_ERRORS = (NotImplementedError, TypeError, ValueError)
_PROBE_KEY = "tfreg_attach_probe"


def flatten_layers(model):
    """`model` and every layer nested in it, each once."""
    # Both Keras generations have this (private) walk over nested layers.
    return list(model._flatten_layers(include_self=True, recursive=True))


def _own_trainable_weights(layer):
    """The trainable weights `layer` created itself, not its sublayers'."""
    if _keras.LEGACY:
        return list(getattr(layer, "_trainable_weights", ()))
    return list(getattr(layer, "_trainable_variables", ()))


def weight_name(variable):
    """The short name of a weight: 'kernel', 'bias', 'recurrent_kernel'."""
    return variable.name.split("/")[-1].split(":")[0]


class _Tree:
    """The layers under a root, each with its chain of layers and its labels.

    A layer's label is its name, with "#k" appended when an earlier sibling
    (or, for weights, an earlier weight of the same layer) has that name.
    """

    def __init__(self, root):
        self.root = root
        self.layers = []
        self.chains = {}  # id(layer) -> (root, ..., layer)
        self.labels = {id(root): root.name}
        self._visit(root, (root,))

    def _visit(self, layer, chain):
        self.chains[id(layer)] = chain
        self.layers.append(layer)
        seen = {}
        for child in layer._flatten_layers(include_self=False,
                                           recursive=False):
            if id(child) in self.chains:
                continue
            count = seen.get(child.name, 0)
            seen[child.name] = count + 1
            self.labels[id(child)] = (f"{child.name}#{count}" if count
                                      else child.name)
            self._visit(child, chain + (child,))

    def relative(self, ancestor, layer):
        """The labels from `ancestor` (excluded) down to `layer` (included)."""
        chain = self.chains[id(layer)]
        start = [id(link) for link in chain].index(id(ancestor))
        return tuple(self.labels[id(link)] for link in chain[start + 1:])

    def weights(self):
        """(layer, variable, label) of each trainable weight, each once."""
        found = []
        seen = set()
        for layer in self.layers:
            names = {}
            for variable in _own_trainable_weights(layer):
                name = weight_name(variable)
                count = names.get(name, 0)
                names[name] = count + 1
                if id(variable) not in seen:
                    seen.add(id(variable))
                    found.append((layer, variable,
                                  f"{name}#{count}" if count else name))
        return found

    def paths(self):
        """{id(variable): path} of each trainable weight."""
        paths = {}
        for layer, variable, label in self.weights():
            links = self.relative(self.root, layer) or (self.root.name,)
            paths[id(variable)] = "/".join(links + (label,))
        return paths


def weight_paths(model):
    """{id(variable): path} of every trainable weight of `model`.

    A path is what `include`/`exclude` regexes see: the labels of the layers
    from `model` (excluded) down to the layer that owns the weight, then the
    weight's name ("inner/dense/kernel"; "dense/kernel" for a layer of the
    model itself; "model_name/weight_name" for a weight of `model` itself).
    """
    return _Tree(model).paths()


def weight_path(layer, variable, model=None):
    """The path of `variable` (a weight of `layer`) in `model`.

    As in `weight_paths`; without `model`, "layer_name/weight_name".
    """
    if model is None:
        return f"{layer.name}/{weight_name(variable)}"
    return weight_paths(model)[id(variable)]


def is_kernel(layer, variable):
    """The default selection: kernels and embeddings of non-normalization layers.

    Biases, normalization parameters (gamma, beta, moving statistics) and
    non-trainable weights are not kernels.
    """
    if "Normalization" in type(layer).__name__:
        return False
    name = weight_name(variable)
    return name.endswith("kernel") or name in _KERNEL_NAMES


def _matcher(selector, argument):
    """`selector` as a function (layer, variable, path) -> bool, or None."""
    if selector is None:
        return None
    if isinstance(selector, str):
        try:
            pattern = re.compile(selector)
        except re.error as error:
            raise ValueError(
                f"Invalid value for argument `{argument}`. Expected a regular "
                f"expression or a predicate (layer, variable) -> bool. "
                f"Received: {argument}={selector!r} ({error})") from None
        return lambda layer, variable, path: bool(pattern.search(path))
    if callable(selector):
        return lambda layer, variable, path: bool(selector(layer, variable))
    raise TypeError(
        f"Invalid value for argument `{argument}`. Expected None, a regular "
        f"expression (str) or a predicate (layer, variable) -> bool. "
        f"Received: {argument}={selector!r}")


def select(model, include=None, exclude=None, default_include=None):
    """(layer, variable) pairs of the trainable weights `include` selects.

    `include`/`exclude` are as in `apply`; `default_include` (a predicate
    (layer, variable) -> bool; default: kernels) applies when `include` is
    None.
    """
    include = _matcher(include, "include") or _matcher(
        default_include or is_kernel, "default_include")
    exclude = _matcher(exclude, "exclude")
    tree = _Tree(model)
    paths = tree.paths()
    selected = []
    for layer, variable, _ in tree.weights():
        path = paths[id(variable)]
        if include(layer, variable, path) and not (
                exclude and exclude(layer, variable, path)):
            selected.append((layer, variable))
    return selected


def _argument_names(variable):
    """Constructor arguments that may hold `variable`'s regularizer."""
    name = weight_name(variable)
    candidates = [f"{name}_regularizer"]
    if name.endswith("_kernel"):
        candidates.append(f"{name[:-len('_kernel')]}_regularizer")
    if name == "kernel":
        # DepthwiseConv's only kernel is saved as `depthwise_regularizer`.
        candidates.append("depthwise_regularizer")
    return candidates


def _config(layer):
    try:
        return layer.get_config()
    except _CONFIG_ERRORS:
        return None


def _config_argument(layer, variable):
    """The constructor argument of `layer` named for `variable`, or None."""
    names = _argument_names(variable)
    return next((attribute for attribute
                 in _settable_arguments(layer, variable)
                 if attribute in names), None)


def _settable_arguments(layer, variable):
    """Attributes of `layer` behind its config arguments named for `variable`.

    The attribute is the argument's name or, as in MultiHeadAttention, the
    same name with a leading underscore.
    """
    config = _config(layer)
    if config is None:
        return []
    return [attribute for candidate in _argument_names(variable)
            if candidate in config
            for attribute in (candidate, f"_{candidate}")
            if hasattr(layer, attribute)]


class _Probe(_keras.Regularizer):
    """A zero penalty that marks where a config carries a regularizer."""

    def __init__(self, token):
        self.token = token

    def __call__(self, x):
        return tf.zeros((), x.dtype)

    def get_config(self):
        return {_PROBE_KEY: self.token}

    @classmethod
    def from_config(cls, config):
        return cls(config[_PROBE_KEY])


def _probe_tokens(config):
    """The tokens of the `_Probe`s (objects or configs) inside `config`."""
    tokens = set()
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, _Probe):
            tokens.add(item.token)
        elif isinstance(item, dict):
            if _PROBE_KEY in item:
                tokens.add(item[_PROBE_KEY])
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return tokens


def _with_probes(settings, read):
    """`read()` while each attribute `settings[i]` = (layer, name) holds
    `_Probe(i)`; an attribute that cannot be set (a read-only property) is
    left alone."""
    originals = []
    try:
        for token, (layer, attribute) in enumerate(settings):
            original = getattr(layer, attribute)
            try:
                setattr(layer, attribute, _Probe(token))
            except AttributeError:
                continue
            originals.append((layer, attribute, original))
        return read()
    finally:
        for layer, attribute, original in reversed(originals):
            setattr(layer, attribute, original)


def _saved_settings(root, settings):
    """The (layer, attribute) of `settings` whose value `root`'s config
    (what saving writes) shows."""
    settings = list({(id(layer), attribute): (layer, attribute)
                     for layer, attribute in settings}.values())
    if not settings:
        return []
    config = _with_probes(settings, lambda: _config(root))
    if config is None:
        return []
    tokens = _probe_tokens(config)
    return [setting for token, setting in enumerate(settings)
            if token in tokens]


def _serializes(config, layer):
    """Whether `config` holds a layer config with `layer`'s name."""
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            inner = item.get("config")
            if ("class_name" in item and isinstance(inner, dict)
                    and inner.get("name") == layer.name):
                return True
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def _current_regularizer(layer, variable):
    """The regularizer on `variable` now, or None."""
    if not _keras.LEGACY:
        return variable.regularizer
    for _, bound, regularizer in _legacy_entries(layer):
        if bound is variable:
            return regularizer
    return None


class _Holder:
    """The attribute whose saved value regularizes the `covered` weights."""

    def __init__(self, layer, attribute, covered):
        self.layer = layer
        self.attribute = attribute
        self.covered = covered  # [(layer, variable)], all that it reaches

    def sync(self):
        """Sets the attribute when the covered weights' regularizers are one
        object (or all None); returns the attribute's value, the regularizer
        each covered weight has after loading."""
        current = [_current_regularizer(layer, variable)
                   for layer, variable in self.covered]
        if all(regularizer is current[0] for regularizer in current):
            setattr(self.layer, self.attribute, current[0])
        return getattr(self.layer, self.attribute)


def _relative_layers(tree):
    return {tree.relative(tree.root, layer): layer for layer in tree.layers}


def _rebuilt_coverage(ancestor, holder, attribute, needed):
    """Which weights get a probe when `ancestor` is rebuilt from its config.

    The config is read while `holder.attribute` holds a probe and loaded as
    a saved model is; the rebuilt layer is also built from `ancestor`'s build
    config when the layers at `needed` (label tuples relative to `ancestor`)
    do not exist before. Returns a function (labels, variable) -> bool, or
    None when `ancestor` cannot be rebuilt here.
    """
    config = _with_probes([(holder, attribute)], lambda: _config(ancestor))
    if config is None:
        return None
    try:
        with _keras.keras.saving.custom_object_scope({"_Probe": _Probe}):
            clone = type(ancestor).from_config(config)
            layers = _relative_layers(_Tree(clone))
            if not needed <= layers.keys() and not clone.built:
                build_config = ancestor.get_build_config()
                if build_config:
                    clone.build_from_config(build_config)
                    layers = _relative_layers(_Tree(clone))
    except Exception:  # pylint: disable=broad-except
        # A layer that cannot be rebuilt here from its config is not known
        # to get its regularizers back from it either: reported as not saved.
        return None

    def covers(labels, variable):
        layer = layers.get(labels)
        if layer is None:
            return False
        if any(isinstance(getattr(layer, name), _Probe)
               for name in _settable_arguments(layer, variable)):
            return True
        return any(isinstance(_current_regularizer(layer, own), _Probe)
                   for own in _own_trainable_weights(layer)
                   if weight_name(own) == weight_name(variable))

    return covers


def _holders(tree, items):
    """For each (layer, variable) of `items`, its `_Holder`, or None.

    The layer's own argument when the model's config shows it. Otherwise,
    going up from the layer while the layer on the way is not saved in its
    parent's config, an argument of a layer under that parent which the
    model's config shows and which reaches the weight when the parent is
    rebuilt from its config (MultiHeadAttention's `kernel_regularizer`).
    """
    saved = {(id(layer), attribute) for layer, attribute in _saved_settings(
        tree.root, [(layer, attribute) for layer, variable in items
                    for attribute in _settable_arguments(layer, variable)])}
    shared = {}
    holders = []
    for layer, variable in items:
        attributes = [attribute for attribute
                      in _settable_arguments(layer, variable)
                      if (id(layer), attribute) in saved]
        if attributes:
            holders.append(_Holder(layer, attributes[0], [(layer, variable)]))
        else:
            holders.append(_shared_holder(tree, layer, variable, shared))
    return holders


def _shared_holder(tree, layer, variable, cache):
    """The `_Holder` of a weight that its layer's own config does not save.

    `cache` keeps, per (ancestor, weight name), the holders found under that
    ancestor with the weights each reaches.
    """
    chain = tree.chains[id(layer)]
    for depth in range(len(chain) - 2, -1, -1):
        ancestor, child = chain[depth], chain[depth + 1]
        config = _config(ancestor)
        if config is None or _serializes(config, child):
            # `child` is rebuilt from its own saved config: nothing above it
            # decides its regularizers.
            return None
        key = (id(ancestor), weight_name(variable))
        if key not in cache:
            cache[key] = _shared_holders_under(tree, ancestor, variable)
        for holder in cache[key]:
            if any(other is variable for _, other in holder.covered):
                return holder
    return None


def _shared_holders_under(tree, ancestor, variable):
    """`_Holder`s under `ancestor` for weights named like `variable`: saved
    arguments of layers that own no such weight themselves.

    Besides the layers nested in `ancestor`, the candidates include layers
    held in attributes without being tracked as sublayers, with theirs (the
    wrapped layer whose config tf_keras' Bidirectional saves and rebuilds
    both directions from).
    """
    name = weight_name(variable)
    under = [layer for layer in tree.layers
             if any(link is ancestor for link in tree.chains[id(layer)])]
    targets = [(layer, own) for layer in under
               for own in _own_trainable_weights(layer)
               if weight_name(own) == name]
    owners = {id(layer) for layer, _ in targets}
    candidates = {id(layer): layer for layer in under}
    for layer in under:
        for value in vars(layer).values():
            if (isinstance(value, _keras.keras.layers.Layer)
                    and id(value) not in tree.chains):
                candidates.update((id(held), held)
                                  for held in flatten_layers(value))
    settings = _saved_settings(tree.root, [
        (layer, attribute) for layer in candidates.values()
        if id(layer) not in owners
        for attribute in _settable_arguments(layer, variable)])
    needed = {tree.relative(ancestor, layer) for layer, _ in targets}
    holders = []
    for holder, attribute in settings:
        covers = _rebuilt_coverage(ancestor, holder, attribute, needed)
        if covers is None:
            continue
        covered = [(layer, own) for layer, own in targets
                   if covers(tree.relative(ancestor, layer), own)]
        if covered:
            holders.append(_Holder(holder, attribute, covered))
    return holders


class _BoundPenalty:
    """tf_keras callable loss: `regularizer(variable)` for one fixed variable."""

    def __init__(self, regularizer, variable):
        self.regularizer = regularizer
        self.variable = variable

    def __call__(self):
        return self.regularizer(self.variable)


def _legacy_entries(layer):
    """(callable loss, variable, regularizer) for each weight penalty."""
    entries = []
    for entry in getattr(layer, "_callable_losses", ()):
        loss = entry
        # add_loss wraps every callable as partial(_tag_callable, loss).
        if isinstance(loss, functools.partial) and loss.args:
            loss = loss.args[0]
        if isinstance(loss, _BoundPenalty):
            entries.append((entry, loss.variable, loss.regularizer))
        elif isinstance(loss, functools.partial) and loss.args:
            # tf_keras' own: partial(_loss_for_variable, variable), where
            # _loss_for_variable closes over the regularizer.
            variables = inspect.getclosurevars(loss.func).nonlocals
            entries.append((entry, loss.args[0],
                            variables.get("regularizer")))
    return entries


def regularized_weights(model):
    """(layer, variable, regularizer) for every regularized trainable weight."""
    found = []
    for layer in flatten_layers(model):
        if _keras.LEGACY:
            for _, variable, regularizer in _legacy_entries(layer):
                found.append((layer, variable, regularizer))
        else:
            for variable in _own_trainable_weights(layer):
                if variable.regularizer is not None:
                    found.append((layer, variable, variable.regularizer))
    return found


def _detach(layer, variable):
    if _keras.LEGACY:
        stale = [entry for entry, bound, _ in _legacy_entries(layer)
                 if bound is variable]
        layer._callable_losses[:] = [
            entry for entry in layer._callable_losses
            if not any(entry is old for old in stale)]
    else:
        variable.regularizer = None


def _drop_compiled_functions(model):
    for name in ("train_function", "test_function"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)


def check_built(model):
    if not getattr(model, "built", False) or not model.weights:
        raise ValueError(
            "Expected a built model (call it on data or build it first). "
            f"Received: model={getattr(model, 'name', model)!r} with no weights.")


def _paths(model, items):
    """The path of each (layer, variable) of `items` in `model`."""
    paths = weight_paths(model)
    result = [paths[id(variable)] for _, variable in items]
    # Labels make paths unique, except against a layer whose own name looks
    # like a label ("dense#1") or like the model's: refuse to merge weights.
    duplicates = sorted(path for path, count
                        in collections.Counter(result).items() if count > 1)
    if duplicates:
        raise ValueError(
            "Expected a distinct path for every selected weight. Received: "
            f"several weights at {duplicates!r} in {model.name!r}; rename "
            "one of their layers.")
    return result


def apply(model, regularizer, include=None, exclude=None):
    """Attaches `regularizer` to the matching weights of a built model.

    Weights are selected among the model's trainable weights (nested layers
    included). `include` and `exclude` are each None, a regular expression
    searched in the weight's path, or a predicate `(layer, variable) -> bool`.
    The path is "layer_name/weight_name" for a layer of the model itself
    (e.g. "dense_1/kernel") and lists every layer on the way for nested ones
    ("encoder/dense_1/kernel" in a nested model "encoder",
    "bidirectional/forward_lstm/lstm_cell/kernel"); a layer that repeats an
    earlier sibling's name gets "#1", "#2", ... appended, so each weight has
    its own path. By default every kernel (also recurrent, depthwise and
    pointwise kernels, and embeddings) is selected; biases and normalization
    parameters are not. A weight that already has a regularizer gets
    `regularizer` instead.

    Args:
      model: A built Keras model (or layer).
      regularizer: A regularizer or anything `tfreg.get` accepts ("l2", a
        config dict).
      include: Which weights to regularize (default: kernels).
      exclude: Which of those to leave alone (default: none).

    Returns:
      A dict mapping the path of each regularized weight to True when the
      regularizer is written into saved models and comes back on loading,
      else False (it is regularized in memory only). True needs a
      constructor argument in the model's config that reaches the weight:
      the layer's own (`kernel_regularizer` for "kernel"), or, for a layer
      its parent rebuilds from the parent's config, the parent's (as
      MultiHeadAttention's `kernel_regularizer`), which covers several
      weights and is set only when all of them get this regularizer.

    >>> import tfreg
    >>> from tfreg._keras import keras
    >>> model = keras.Sequential([keras.Input((3,)),
    ...                           keras.layers.Dense(2, name="hidden"),
    ...                           keras.layers.Dense(1, name="out")])
    >>> tfreg.apply(model, tfreg.L2(0.1), exclude="out")
    {'hidden/kernel': True}
    >>> len(model.losses)
    1
    >>> tfreg.remove(model)
    ['hidden/kernel']
    >>> len(model.losses)
    0
    """
    regularizer = serialization.get(regularizer)
    if regularizer is None:
        raise ValueError(
            "Expected a regularizer. Received: regularizer=None "
            "(use tfreg.remove to take regularizers off).")
    if not isinstance(regularizer, _keras.Regularizer):
        raise TypeError(
            "Expected a Keras regularizer (for example a tfreg.Regularizer). "
            f"Received: regularizer={regularizer!r}")
    check_built(model)
    return attach_each(model, select(model, include, exclude),
                       lambda layer, variable: regularizer)


def attach_each(model, selected, make_regularizer):
    """Attaches `make_regularizer(layer, variable)` to each selected weight.

    Returns the dict `apply` returns.
    """
    paths = _paths(model, selected)
    for layer, variable in selected:
        regularizer = make_regularizer(layer, variable)
        _detach(layer, variable)
        if _keras.LEGACY:
            layer.add_loss(_BoundPenalty(regularizer, variable))
        else:
            variable.regularizer = regularizer
        argument = _config_argument(layer, variable)
        if argument is not None:
            setattr(layer, argument, regularizer)
    attached = {}
    for (layer, variable), path, holder in zip(
            selected, paths, _holders(_Tree(model), selected)):
        attached[path] = holder is not None and (
            holder.sync() is _current_regularizer(layer, variable))
    _drop_compiled_functions(model)
    return attached


def remove(model, include=None, exclude=None):
    """Takes the regularizers off the matching weights of a built model.

    Undoes `apply`, and also removes regularizers given to layer constructors.
    `include` and `exclude` select weights as in `apply`, except that the
    default `include` is every regularized weight. Activity regularizers are
    left alone.

    A weight whose saved regularizer is an argument of its parent covering
    other weights too (MultiHeadAttention's `kernel_regularizer`) loses it in
    the saved model only when all of those weights are removed; otherwise
    a warning lists the weights that get it back on loading.

    Returns:
      The sorted paths (as in `apply`) of the weights whose regularizer was
      removed.
    """
    check_built(model)
    regularized = {id(variable) for _, variable, _ in regularized_weights(model)}
    targets = [(layer, variable) for layer, variable in select(
        model, include, exclude, lambda layer, variable: True)
               if id(variable) in regularized]
    paths = _paths(model, targets)
    for layer, variable in targets:
        _detach(layer, variable)
        argument = _config_argument(layer, variable)
        if argument is not None:
            setattr(layer, argument, None)
    restored = [path for path, holder in zip(
        paths, _holders(_Tree(model), targets))
                if holder is not None and holder.sync() is not None]
    if restored:
        warnings.warn(
            f"Removed the regularizers of {restored} in memory only: the "
            "saved model still regularizes them through an argument of their "
            "parent layer that also covers weights that keep theirs, so they "
            "get it back on loading. Remove it from all of those weights to "
            "save the removal.", stacklevel=2)
    _drop_compiled_functions(model)
    return sorted(paths)
