"""The shrink_speed case: channel_groups and shrink against a copy of the model."""

import tfreg
from tfreg import _keras
from tools.bench.harness import Case, interleave, median, round_ratios, Target
from tools.bench.writer import table

keras = _keras.keras


SHRINK_SPEED_BOUND = 3.0


def _shrink_model(settings):
    """ResNet50 (224 x 224); tiny: MobileNet (alpha 0.25, 32 x 32)."""
    if settings.scale == "tiny":
        return "MobileNet", keras.applications.MobileNet(
            weights=None, alpha=0.25, input_shape=(32, 32, 3))
    return "ResNet50", keras.applications.ResNet50(weights=None)


def run_shrink_speed(settings):
    name, model = _shrink_model(settings)
    groups = tfreg.channel_groups(model)
    # Every other group zeroed, all its slices; each variable read and
    # assigned once (a group is one channel: ResNet50 has 66K slices).
    values = {}
    for group in groups[1::2]:
        for piece in group.trainable_slices():
            variable, value = values.setdefault(
                id(piece.variable),
                (piece.variable, piece.variable.numpy()))
            entries = [slice(None)] * value.ndim
            entries[piece.axis] = list(piece.indices)
            value[tuple(entries)] = 0
    for variable, value in values.values():
        variable.assign(value)

    def clone():
        keras.models.clone_model(model).set_weights(model.get_weights())

    def shrink():
        tfreg.shrink(model, groups=tfreg.channel_groups(model))

    times = interleave({"clone_model + set_weights": clone,
                        "channel_groups + shrink": shrink},
                       settings.rounds(full=3, quick=1),
                       warmup=settings.pick(full=1, quick=0))
    rows = []
    for contender, seconds in times.items():
        ratios = round_ratios(seconds, times["clone_model + set_weights"])
        rows.append({"model": name, "contender": contender,
                     "median_s": median(seconds), "vs_clone": median(ratios),
                     "rounds_vs_clone": ratios})
    return rows


def table_shrink_speed(rows):
    return ("Seconds to trace the channel groups of a model with every "
            "other group zeroed and shrink it, against copying the model "
            "(`keras.models.clone_model` + `set_weights`); `x clone` is the "
            "median per-round ratio.\n\n" + table(rows, (
                ("model", "model"), ("contender", "contender"),
                ("s", "median_s"), ("x clone", "vs_clone"),
                ("x clone per round", lambda r: " ".join(
                    f"{x:.2f}" for x in r["rounds_vs_clone"])))))


def targets_shrink_speed(rows, settings):
    del settings
    return [Target(f"channel_groups + shrink <= {SHRINK_SPEED_BOUND:g}x "
                   f"clone_model + set_weights", row["model"], "",
                   row["vs_clone"], row["vs_clone"] <= SHRINK_SPEED_BOUND)
            for row in rows if row["contender"] == "channel_groups + shrink"]


SHRINK_SPEED_CASE = Case(
    name="shrink_speed",
    title="Shrink speed",
    about="channel_groups and shrink of ResNet50 against a plain copy of "
          "the model.",
    run=run_shrink_speed,
    table=table_shrink_speed,
    targets=targets_shrink_speed)
