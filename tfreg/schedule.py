"""Finding a model's `Strength`s and changing them on a schedule."""

import numpy as np
import tensorflow as tf

from tfreg import _keras
from tfreg import base
from tfreg import validation
from tfreg import walk

__all__ = ["StrengthScheduler", "strengths"]


def _strength_values(model):
    """{name: {id: Strength}} of the `Strength`s in `model`'s tfreg
    regularizers (`walk.regularizers`: on weights, in the optimizer, held
    as layer arguments)."""
    found = {}
    for regularizer in walk.regularizers(model):
        if isinstance(regularizer, base.Regularizer):
            for value in regularizer.strength_arguments().values():
                found.setdefault(value.name, {})[id(value)] = value
    return found


def strengths(model):
    """Maps each `Strength` name in `model` to the list of its variables.

    A checkpoint of the model already holds them (regularizers track their
    strengths); this map is for reading or assigning them by name.
    `model` is a Keras model or layer (TypeError otherwise).
    """
    walk.check_model(model)
    return {name: list({id(value.variable): value.variable
                        for value in values.values()}.values())
            for name, values in _strength_values(model).items()}


class StrengthScheduler(_keras.keras.callbacks.Callback):
    """Sets named `Strength`s from schedules, per epoch or per step.

    Each schedule maps the epoch (per="epoch") or the global training step
    (per="step": the optimizer's `iterations`, which carries on across
    `fit` calls) to a strength; the value is assigned to every `Strength`
    of that name in the model before the epoch or step runs, without a
    retrace, and is logged as `strength/<name>` in the epoch's logs (so in
    `History`). With `steps_per_execution=k` Keras runs k steps per call
    and calls batch callbacks once per call: the strength is then set once
    per k steps, from the first step's value (0, k, 2k, ...).

    Example: warm up a KL-like term over the first 10 epochs.

        strength = tfreg.Strength(0.0, name="l2")
        model = ...(kernel_regularizer=tfreg.L2(strength))...
        model.fit(..., callbacks=[tfreg.StrengthScheduler(
            {"l2": lambda epoch: 1e-3 * min(1.0, epoch / 10)})])

    Args:
      schedules: dict from Strength name to a callable (int -> float).
      per: "epoch" or "step".
    """

    def __init__(self, schedules, per="epoch"):
        super().__init__()
        if not isinstance(schedules, dict) or not all(
                isinstance(k, str) and callable(v) for k, v in schedules.items()):
            raise TypeError(validation.message(
                "schedules", schedules,
                "a dict from Strength names to callables"))
        validation.choice("per", per, ("epoch", "step"))
        self.schedules = schedules
        self.per = per
        self._strengths = {}

    def on_train_begin(self, logs=None):
        found = _strength_values(self.model)
        missing = sorted(set(self.schedules) - set(found))
        if missing:
            keys = ", ".join(f"{name!r}: ..." for name in self.schedules)
            raise ValueError(validation.message(
                "schedules", self.schedules,
                f"a dict keyed by names of the model's Strengths "
                f"{sorted(found)}", shown=f"{{{keys}}}",
                note=f", where the model has no Strength named {missing}"))
        self._strengths = {name: list(found[name].values())
                           for name in self.schedules}

    def _value(self, name, index):
        """The schedule's value, checked as `Strength.assign` checks it."""
        value = self.schedules[name](index)
        # A scalar tensor (a Keras LearningRateSchedule's) or numpy array is
        # read out; float() would also turn "0.5" and True into numbers.
        if tf.is_tensor(value) or isinstance(value, np.ndarray):
            value = np.asarray(value)
            value = value[()] if value.ndim == 0 else value
        try:
            return validation.non_negative_float("value", value)
        except (TypeError, ValueError) as error:
            raise type(error)(validation.message(
                "schedules", self.schedules,
                "callables returning a finite float >= 0 that float32 holds",
                shown=f"{{{name!r}: <a callable that returned "
                      f"{validation.short_repr(value)} for {self.per} "
                      f"{index}>}}")) from None

    def _apply(self, index):
        for name in self.schedules:
            value = self._value(name, index)
            for strength in self._strengths[name]:
                strength.assign(value)

    def on_epoch_begin(self, epoch, logs=None):
        if self.per == "epoch":
            self._apply(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.per == "step":
            self._apply(int(self.model.optimizer.iterations))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for name in self.schedules:
                logs[f"strength/{name}"] = self._strengths[name][0].value
