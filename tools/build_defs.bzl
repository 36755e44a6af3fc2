"""Build macros shared by tfreg's BUILD files."""

def tfreg_py_test(name, srcs = None, deps = [], **kwargs):
    """A py_test run once per Keras generation.

    `name` runs under Keras 3; `name + "_legacy"` runs the same file with
    TF_USE_LEGACY_KERAS=1 (tf_keras). Python packages (tensorflow, keras,
    tf_keras, tensorflow-probability) come from the interpreter's site-packages.
    """
    srcs = srcs or [name + ".py"]
    for suffix, env in (("", {}), ("_legacy", {"TF_USE_LEGACY_KERAS": "1"})):
        native.py_test(
            name = name + suffix,
            srcs = srcs,
            main = srcs[0],
            deps = deps,
            env = env,
            python_version = "PY3",
            **kwargs
        )

def tfreg_py_tests(srcs, sizes = {}, tags = {}, extra_srcs = {}, **kwargs):
    """One `tfreg_py_test` per file of `srcs` (a glob of *_test.py files).

    A test is "medium" unless `sizes` names it; `tags` and `extra_srcs` map a
    test's name to its tags and to further source files it imports.
    """
    for src in srcs:
        name = src[:-len(".py")]
        tfreg_py_test(
            name = name,
            srcs = [src] + extra_srcs.get(name, []),
            size = sizes.get(name, "medium"),
            tags = tags.get(name, []),
            **kwargs
        )
