"""Installs tfreg. Dependencies are declared here once."""

import os

import setuptools


def _version():
    """tfreg/_version.py's __version__, read without importing tfreg (and
    with it TensorFlow)."""
    namespace = {}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tfreg",
                        "_version.py")
    with open(path, encoding="utf-8") as source:
        exec(source.read(), namespace)  # pylint: disable=exec-used
    return namespace["__version__"]


REQUIRED = [
    # The `tensorflow` wheel runs on CPU, and on GPU with `tfreg[gpu]`.
    # tf-keras requires it too, so a separate tensorflow-cpu would be redundant.
    "tensorflow~=2.21.0",
    "tf-keras~=2.21.0",
    "tensorflow-probability~=0.25.0",
    "numpy>=1.26",
    "absl-py>=2.0",
]

EXTRAS = {
    "gpu": ["tensorflow[and-cuda]~=2.21.0"],
    "compare": ["scikit-learn>=1.4", "matplotlib>=3.8"],
    "test": ["pytest>=8", "hypothesis>=6.100", "scipy>=1.11",
             "scikit-learn>=1.4", "matplotlib>=3.8",
             # keras_hub backbones (Keras 3) in the optimizer tests.
             "keras-hub==0.32.0"],
}

setuptools.setup(
    name="tfreg",
    version=_version(),
    description="Regularizers for tf.keras: Keras parity, structured penalties "
                "and Bayesian priors, XLA-ready.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["tfreg", "tfreg.*"]),
    # The `tfreg` command's launcher: outside the package, so that --help
    # answers without importing TensorFlow.
    py_modules=["_tfreg_cli"],
    python_requires=">=3.10",
    install_requires=REQUIRED,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["tfreg = _tfreg_cli:main"]},
    license="Apache-2.0",
)
