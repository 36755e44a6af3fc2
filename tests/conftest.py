"""pytest runs every test module in one process: split the CPU first."""

from tests import devices

devices.split_cpu()
