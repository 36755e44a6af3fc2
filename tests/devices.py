"""Splits the CPU into logical devices for tf.distribute tests.

TensorFlow accepts the split only before it initializes its devices, so test
modules call `split_cpu()` at import time (and pytest's conftest.py does it
first, since it runs every module in one process).
"""

import tensorflow as tf


def split_cpu(count=2):
    """Tries to expose `count` logical CPUs; returns how many exist."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:  # Devices already initialized: keep what exists.
        pass
    return len(tf.config.list_logical_devices("CPU"))
