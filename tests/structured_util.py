"""Shared by the structured tests: float64 NumPy references and the cases."""

import re

import numpy as np
import tensorflow as tf

import tfreg
from tests import battery

KL_EPSILON = 1e-6


# ---------------------------------------------------------------- references
# Independent float64 numpy implementations (np.linalg.svd / eigh).

def _matrix(w):
    return w.reshape(-1, w.shape[-1])


def _groups(w, axis):
    return np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)


def group_lasso_reference(factor, axis=-1, l1=0.0):
    def reference(w):
        groups = _groups(w, axis)
        return (l1 * np.abs(w).sum() + factor * np.sqrt(groups.shape[1])
                * np.linalg.norm(groups, axis=1).sum())
    return reference


def group_lasso_gradient(factor, axis=-1, l1=0.0):
    def gradient(w):
        moved = np.moveaxis(w, axis, 0)
        groups = moved.reshape(moved.shape[0], -1)
        norms = np.linalg.norm(groups, axis=1, keepdims=True)
        g = factor * np.sqrt(groups.shape[1]) * groups / norms
        return l1 * np.sign(w) + np.moveaxis(g.reshape(moved.shape), 0, axis)
    return gradient


def _gram_minus_identity(m):
    columns = m.shape[1] <= m.shape[0]
    gram = m.T @ m if columns else m @ m.T
    return gram - np.eye(len(gram)), columns


def soft_orthogonal_reference(factor):
    def reference(w):
        return factor * np.square(_gram_minus_identity(_matrix(w))[0]).sum()
    return reference


def soft_orthogonal_gradient(factor):
    def gradient(w):
        m = _matrix(w)
        a, columns = _gram_minus_identity(m)
        g = 4 * factor * (m @ a if columns else a @ m)
        return g.reshape(w.shape)
    return gradient


def spectral_reference(factor):
    return lambda w: factor * np.linalg.svd(_matrix(w), compute_uv=False)[0]**2


def spectral_gradient(factor):
    def gradient(w):
        u, s, vt = np.linalg.svd(_matrix(w), full_matrices=False)
        return (2 * factor * s[0] * np.outer(u[:, 0], vt[0])).reshape(w.shape)
    return gradient


def srip_reference(factor):
    def reference(w):
        a, _ = _gram_minus_identity(_matrix(w))
        return factor * np.abs(np.linalg.eigvalsh(a)).max()
    return reference


def srip_gradient(factor):
    def gradient(w):
        m = _matrix(w)
        a, columns = _gram_minus_identity(m)
        values, vectors = np.linalg.eigh(a)
        top = np.argmax(np.abs(values))
        e = vectors[:, top]
        outer = np.sign(values[top]) * 2 * factor * np.outer(e, e)
        return (m @ outer if columns else outer @ m).reshape(w.shape)
    return gradient


def nuclear_reference(factor):
    return lambda w: factor * np.linalg.svd(_matrix(w), compute_uv=False).sum()


def nuclear_gradient(factor):
    def gradient(w):
        u, _, vt = np.linalg.svd(_matrix(w), full_matrices=False)
        return (factor * u @ vt).reshape(w.shape)
    return gradient


def _covariance(h):
    h = h.reshape(-1, h.shape[-1])
    centered = h - h.mean(axis=0)
    return centered, np.cov(h, rowvar=False, bias=True)


def decov_reference(factor):
    def reference(h):
        _, c = _covariance(h)
        off_diagonal = c - np.diag(np.diag(c))
        return factor * 0.5 * np.square(off_diagonal).sum()
    return reference


def decov_gradient(factor):
    def gradient(h):
        centered, c = _covariance(h)
        off = c - np.diag(np.diag(c))
        return (factor * 2 / len(centered) * centered @ off).reshape(h.shape)
    return gradient


def kl_reference(factor, target, upper=1 - KL_EPSILON):
    def reference(h):
        q = np.clip(h.reshape(-1, h.shape[-1]).mean(axis=0), KL_EPSILON,
                    upper)
        p = target
        return factor * np.sum(p * np.log(p / q)
                               + (1 - p) * np.log((1 - p) / (1 - q)))
    return reference


def kl_gradient(factor, target):
    def gradient(h):
        flat = h.reshape(-1, h.shape[-1])
        q = flat.mean(axis=0)  # test samples stay inside the clip range
        per_unit = factor * (-target / q + (1 - target) / (1 - q)) / len(flat)
        return np.broadcast_to(per_unit, flat.shape).reshape(h.shape)
    return gradient


def gapped_sample(rng, shape):
    """Normal kernels whose top singular value is >= 2x the next and >= 3.

    Power iterations then converge to float64 precision within 40 steps,
    also for SRIP's G - I (its top |eigenvalue| is >= 4x the next).
    """
    x = rng.normal(size=shape)
    u, s, vt = np.linalg.svd(_matrix(x), full_matrices=False)
    s[0] = 2 * max(s[1] if len(s) > 1 else 0.0, 1.0) + 1
    return (u * s @ vt).reshape(shape)


REFERENCE_34 = np.random.default_rng(7).normal(size=(3, 4))
REFERENCE_34_F32 = REFERENCE_34.astype(np.float32)
# The pretrained weights of the battery's large L2SP case: 16M elements.
LARGE_REFERENCE = np.random.default_rng(8).normal(size=battery.LARGE_SHAPE)
WEIGHT_SHAPES = ((3, 4), (5, 3), (2, 3, 2, 5), (1, 1))
ACTIVITY_SHAPES = ((6, 4), (3, 2, 5))

CASES = [
    battery.Case(
        "group_lasso", lambda: tfreg.GroupLasso(0.3),
        reference=group_lasso_reference(0.3),
        gradient=group_lasso_gradient(0.3), shapes=WEIGHT_SHAPES),
    battery.Case(
        "group_lasso_inputs", lambda: tfreg.GroupLasso(0.3, axis=-2),
        reference=group_lasso_reference(0.3, axis=-2),
        gradient=group_lasso_gradient(0.3, axis=-2),
        shapes=((3, 4), (2, 3, 2, 5), (2, 2, 2, 3, 4))),
    battery.Case(
        "sparse_group_lasso", lambda: tfreg.SparseGroupLasso(0.2, 0.3, axis=0),
        reference=group_lasso_reference(0.3, axis=0, l1=0.2),
        gradient=group_lasso_gradient(0.3, axis=0, l1=0.2),
        shapes=WEIGHT_SHAPES),
    battery.Case(
        "soft_orthogonal", lambda: tfreg.SoftOrthogonal(0.3),
        reference=soft_orthogonal_reference(0.3),
        gradient=soft_orthogonal_gradient(0.3), shapes=WEIGHT_SHAPES,
        # Central differences (step 2^-10) of a quartic: error ~ 1e-5.
        grad_atol=1e-4),
    battery.Case(
        "spectral_norm", lambda: tfreg.SpectralNorm(0.3, power_iterations=40),
        reference=spectral_reference(0.3), gradient=spectral_gradient(0.3),
        shapes=WEIGHT_SHAPES, sample=gapped_sample, grad_atol=1e-5),
    battery.Case(
        "srip", lambda: tfreg.SRIP(0.3, power_iterations=40),
        reference=srip_reference(0.3), gradient=srip_gradient(0.3),
        shapes=WEIGHT_SHAPES, sample=gapped_sample, grad_atol=1e-5),
    battery.Case(
        "nuclear_norm", lambda: tfreg.NuclearNorm(0.3),
        reference=nuclear_reference(0.3), gradient=nuclear_gradient(0.3),
        # 1M elements: on 16M the gradient U V^T through a float32
        # Householder Q of 2^18 rows errs by 1.0e-5 of its largest entry.
        shapes=WEIGHT_SHAPES, xla_shape=(1 << 16, 16)),
    battery.Case(
        "l2sp", lambda: tfreg.L2SP(0.3, reference=REFERENCE_34),
        reference=lambda w: 0.3 * np.square(w - REFERENCE_34).sum(),
        gradient=lambda w: 0.6 * (w - REFERENCE_34), shapes=((3, 4),),
        xla_make=lambda: tfreg.L2SP(0.3, reference=LARGE_REFERENCE),
        xla_reference=lambda w: 0.3 * np.square(w - LARGE_REFERENCE).sum()),
    battery.Case(
        "l2sp_float32_reference",
        lambda: tfreg.L2SP(0.3, reference=REFERENCE_34_F32),
        reference=lambda w: 0.3 * np.square(
            w - REFERENCE_34_F32.astype(np.float64)).sum(),
        gradient=lambda w: 0.6 * (w - REFERENCE_34_F32.astype(np.float64)),
        shapes=((3, 4),), xla_shape=None),  # as "l2sp"
    battery.Case(
        "decov", lambda: tfreg.DeCov(0.3), kind="activity",
        reference=decov_reference(0.3), gradient=decov_gradient(0.3),
        shapes=ACTIVITY_SHAPES),
    battery.Case(
        "kl_sparsity", lambda: tfreg.KLSparsity(0.3, target=0.1),
        kind="activity", reference=kl_reference(0.3, 0.1),
        gradient=kl_gradient(0.3, 0.1), shapes=ACTIVITY_SHAPES,
        sample=battery.unit_interval_sample),
]

WEIGHT_CLASSES = (
    ("group_lasso", tfreg.GroupLasso), ("sparse_group_lasso",
                                        tfreg.SparseGroupLasso),
    ("soft_orthogonal", tfreg.SoftOrthogonal),
    ("spectral_norm", tfreg.SpectralNorm), ("srip", tfreg.SRIP),
    ("nuclear_norm", tfreg.NuclearNorm))
MATRIX_CLASSES = WEIGHT_CLASSES[2:]


# One compiled function: calls with the same regularizer object and input
# shape reuse the XLA executable.
XLA_VALUE_AND_GRADIENT = tf.function(battery.value_and_gradient,
                                     jit_compile=True)


def all_modes(regularizer, x):
    """(value, gradient) as numpy, eagerly and under XLA."""
    eager = battery.value_and_gradient(regularizer, x)
    xla = XLA_VALUE_AND_GRADIENT(regularizer, x)
    return [(v.numpy(), g.numpy()) for v, g in (eager, xla)]


def escaped(text):
    return re.escape(text)

