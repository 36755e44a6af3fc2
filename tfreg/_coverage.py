"""Whether a weight's regularizer is saved with its model, found by probing.

A regularizer comes back with a loaded model only if the model's config
(what `.keras`, tf_keras' `.h5` and SavedModel write) carries it to that
weight. Usually the layer that owns the weight has the constructor argument
of the same name (`kernel_regularizer` for "kernel", `recurrent_regularizer`
for "recurrent_kernel"). Some layers are not saved themselves but rebuilt by
their parent from the parent's config (the query/key/value layers of
MultiHeadAttention; under tf_keras the forward and backward layers of
Bidirectional, rebuilt from the wrapped layer's config). Then the argument
that saves the weight's regularizer sits on the parent (or on a layer its
config holds) and covers several weights together.

Nothing is assumed from class names: an argument counts only if the model's
config shows a marker (`_Probe`) set in it, and the weights a parent's
argument covers are those that get the marker when the parent is rebuilt
from its config.
"""

import tensorflow as tf

from tfreg import _keras
from tfreg import walk

# What `get_config` raises for a layer or model that cannot be configured.
_CONFIG_ERRORS = (NotImplementedError, TypeError, ValueError)
_PROBE_KEY = "tfreg_attach_probe"


def _argument_names(variable):
    """Constructor arguments that may hold `variable`'s regularizer."""
    name = walk.weight_name(variable)
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


def _argument_attributes(layer, arguments):
    """The attributes of `layer` that hold the constructor `arguments`.

    The argument's own name or, as in MultiHeadAttention, the same name
    with a leading underscore.
    """
    return [attribute for argument in arguments
            for attribute in (argument, f"_{argument}")
            if hasattr(layer, attribute)]


def _attribute_layers(layer):
    """Layers held in `layer`'s attributes, tracked as sublayers or not.

    tf_keras' Bidirectional holds the wrapped layer whose config it saves
    without tracking it.
    """
    return [value for value in vars(layer).values()
            if isinstance(value, _keras.keras.layers.Layer)]


class Arguments:
    """The regularizer arguments of layers, each layer's config read once.

    One instance serves one attach or removal: a layer's config keys do not
    change meanwhile, and the layers it has read are kept alive, so that no
    other layer can take over an `id` in its table.
    """

    def __init__(self):
        self._read = {}  # id(layer) -> (layer, regularizer arguments)

    def settable(self, layer, variable):
        """Attributes of `layer` behind its config arguments named for
        `variable` (`_argument_attributes`)."""
        if id(layer) not in self._read:
            config = _config(layer)
            self._read[id(layer)] = (layer, () if config is None else {
                key for key in config if key.endswith("_regularizer")})
        held = self._read[id(layer)][1]
        return _argument_attributes(
            layer, [name for name in _argument_names(variable) if name in held])

    def own(self, layer, variable):
        """The attribute of `layer`'s constructor argument named for
        `variable` (`kernel_regularizer` for its "kernel"), or None."""
        names = _argument_names(variable)
        return next((attribute for attribute in self.settable(layer, variable)
                     if attribute in names), None)


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


class Holder:
    """The attribute whose saved value regularizes the `covered` weights."""

    def __init__(self, layer, attribute, covered):
        self.layer = layer
        self.attribute = attribute
        self.covered = covered  # [(layer, variable)], all that it reaches

    def sync(self):
        """Sets the attribute when the covered weights' regularizers are one
        object (or all None); returns the attribute's value, the regularizer
        each covered weight has after loading."""
        current = [walk.regularizer_of(layer, variable)
                   for layer, variable in self.covered]
        if all(regularizer is current[0] for regularizer in current):
            setattr(self.layer, self.attribute, current[0])
        return getattr(self.layer, self.attribute)


def _relative_layers(tree):
    return {tree.relative(tree.root, layer): layer for layer in tree.layers}


def _rebuilt_coverage(ancestor, holder, attribute, needed, arguments):
    """Which weights get a probe when `ancestor` is rebuilt from its config.

    The config is read while `holder.attribute` holds a probe and loaded as
    a saved model is; the rebuilt layer is also built from `ancestor`'s build
    config when the layers at `needed` (label tuples relative to `ancestor`)
    do not exist before. `arguments` is the operation's `Arguments`.
    Returns a function (labels, variable) -> bool, or None when `ancestor`
    cannot be rebuilt here.
    """
    config = _with_probes([(holder, attribute)], lambda: _config(ancestor))
    if config is None:
        return None
    try:
        with _keras.keras.saving.custom_object_scope({"_Probe": _Probe}):
            clone = type(ancestor).from_config(config)
            layers = _relative_layers(walk.Tree(clone))
            if not needed <= layers.keys() and not clone.built:
                build_config = ancestor.get_build_config()
                if build_config:
                    clone.build_from_config(build_config)
                    layers = _relative_layers(walk.Tree(clone))
    except Exception:  # pylint: disable=broad-except
        # A layer that cannot be rebuilt here from its config is not known
        # to get its regularizers back from it either: reported as not saved.
        return None

    def covers(labels, variable):
        layer = layers.get(labels)
        if layer is None:
            return False
        if any(isinstance(getattr(layer, name), _Probe)
               for name in arguments.settable(layer, variable)):
            return True
        return any(isinstance(walk.regularizer_of(layer, own), _Probe)
                   for own in walk.own_weights(layer)
                   if walk.weight_name(own) == walk.weight_name(variable))

    return covers


def holders(tree, items, arguments):
    """For each (layer, variable) of `items`, its `Holder`, or None.

    `tree` is the `walk.Tree` of the model, `arguments` the `Arguments` of
    the attach or removal. The holder is the layer's own
    argument when the model's config shows it. Otherwise, going up from the
    layer while the layer on the way is not saved in its parent's config,
    an argument of a layer under that parent which the model's config shows
    and which reaches the weight when the parent is rebuilt from its config
    (MultiHeadAttention's `kernel_regularizer`).
    """
    saved = {(id(layer), attribute) for layer, attribute in _saved_settings(
        tree.root, [(layer, attribute) for layer, variable in items
                    for attribute in arguments.settable(layer, variable)])}
    shared = {}
    found = []
    for layer, variable in items:
        attributes = [attribute for attribute
                      in arguments.settable(layer, variable)
                      if (id(layer), attribute) in saved]
        if attributes:
            found.append(Holder(layer, attributes[0], [(layer, variable)]))
        else:
            found.append(_shared_holder(tree, layer, variable, arguments,
                                        shared))
    return found


def _shared_holder(tree, layer, variable, arguments, cache):
    """The `Holder` of a weight that its layer's own config does not save.

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
        key = (id(ancestor), walk.weight_name(variable))
        if key not in cache:
            cache[key] = _shared_holders_under(tree, ancestor, variable,
                                               arguments)
        for holder in cache[key]:
            if any(other is variable for _, other in holder.covered):
                return holder
    return None


def _shared_holders_under(tree, ancestor, variable, arguments):
    """`Holder`s under `ancestor` for weights named like `variable`: saved
    arguments of layers that own no such weight themselves.

    Besides the layers nested in `ancestor`, the candidates include layers
    held in attributes without being tracked as sublayers, with theirs (the
    wrapped layer whose config tf_keras' Bidirectional saves and rebuilds
    both directions from).
    """
    name = walk.weight_name(variable)
    under = [layer for layer in tree.layers
             if any(link is ancestor for link in tree.chains[id(layer)])]
    targets = [(layer, own) for layer in under
               for own in walk.own_weights(layer)
               if walk.weight_name(own) == name]
    owners = {id(layer) for layer, _ in targets}
    candidates = {id(layer): layer for layer in under}
    for layer in under:
        for value in _attribute_layers(layer):
            if id(value) not in tree.chains:
                candidates.update((id(held), held)
                                  for held in walk.layers(value))
    settings = _saved_settings(tree.root, [
        (layer, attribute) for layer in candidates.values()
        if id(layer) not in owners
        for attribute in arguments.settable(layer, variable)])
    needed = {tree.relative(ancestor, layer) for layer, _ in targets}
    found = []
    for holder, attribute in settings:
        covers = _rebuilt_coverage(ancestor, holder, attribute, needed,
                                   arguments)
        if covers is None:
            continue
        covered = [(layer, own) for layer, own in targets
                   if covers(tree.relative(ancestor, layer), own)]
        if covered:
            found.append(Holder(holder, attribute, covered))
    return found
