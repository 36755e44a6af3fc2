"""Parameters and FLOPs of a model, and a before/after table for `shrink`."""


from tfreg import _keras
from tfreg import _table as _table_lib
from tfreg.pruning import graph as graph_lib
from tfreg.pruning import rules

__all__ = ["model_cost", "shrink_summary"]

keras = _keras.keras


def _call_flops(call):
    """2 x multiply-adds of one call, by its layer's rule."""
    return rules.rule_for(call.layer).flops(call)


def model_cost(model):
    """{"params": ..., "flops": ..., "layers": {name: (params, flops)}}.

    FLOPs: 2 x multiply-adds of one example through the Dense, convolution
    and depthwise layers (every call of a shared layer); others count 0.
    Needs static shapes apart from the batch.
    """
    per_layer = {}
    for call in graph_lib.graph(model).calls:
        if not isinstance(call.layer, keras.layers.Layer) or isinstance(
                call.layer, keras.layers.InputLayer):
            continue
        params, flops = per_layer.get(call.layer.name, (
            call.layer.count_params(), 0))
        per_layer[call.layer.name] = (params, flops + _call_flops(call))
    return {"params": model.count_params(),
            "flops": sum(flops for _, flops in per_layer.values()),
            "layers": per_layer}


def shrink_summary(original, shrunk, print_fn=print):
    """Prints and returns params and FLOPs per layer before and after.

    Rows (dicts with layer, params_before, params_after, flops_before,
    flops_after) for the layers whose params or FLOPs changed, then a
    "total" row. Pass `print_fn=None` to only get the rows.
    """
    before, after = model_cost(original), model_cost(shrunk)
    rows = []
    for name, (params, flops) in before["layers"].items():
        new_params, new_flops = after["layers"].get(name, (0, 0))
        if (params, flops) != (new_params, new_flops):
            rows.append({"layer": name, "params_before": params,
                         "params_after": new_params, "flops_before": flops,
                         "flops_after": new_flops})
    rows.append({"layer": "total", "params_before": before["params"],
                 "params_after": after["params"],
                 "flops_before": before["flops"],
                 "flops_after": after["flops"]})
    if print_fn is not None:
        print_fn(_table(rows))
    return rows


def _table(rows):
    header = ("layer", "params before", "params after", "FLOPs before",
              "FLOPs after")
    text = _table_lib.render(header, [
        (row["layer"], row["params_before"], row["params_after"],
         row["flops_before"], row["flops_after"]) for row in rows])
    total = rows[-1]
    params = total["params_before"] / max(total["params_after"], 1)
    flops = total["flops_before"] / max(total["flops_after"], 1)
    return (f"{text}\n{params:.2f}x fewer parameters, "
            f"{flops:.2f}x fewer FLOPs")
