"""The one module that imports neural-tangents.

neural-tangents 0.6.5 is unmaintained and imports only on JAX <= 0.5.3, so every use
of it in this package goes through the names below; replacing it is a one-file change.
Its STRUCTURED_DERIVATIVES / AUTO empirical-NTK modes crash on JAX >= 0.4.26, so only
JACOBIAN_CONTRACTION and NTK_VECTOR_PRODUCTS are exposed.
"""
import os

# neural-tangents imports tensorflow (through tf2jax); keep its start-up logs quiet.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import neural_tangents as nt  # noqa: E402
from neural_tangents import stax  # noqa: E402
from neural_tangents._src.stax.requirements import Bool  # noqa: E402
from neural_tangents._src.stax.requirements import Diagonal  # noqa: E402
from neural_tangents._src.stax.requirements import layer  # noqa: E402
from neural_tangents._src.stax.requirements import requires  # noqa: E402
from neural_tangents._src.utils.kernel import Kernel  # noqa: E402

predict = nt.predict
empirical_ntk_fn_generic = nt.empirical_ntk_fn
monte_carlo_kernel_fn = nt.monte_carlo_kernel_fn

JACOBIAN_CONTRACTION = nt.NtkImplementation.JACOBIAN_CONTRACTION
NTK_VECTOR_PRODUCTS = nt.NtkImplementation.NTK_VECTOR_PRODUCTS
IMPLEMENTATIONS = {
    'jacobian_contraction': JACOBIAN_CONTRACTION,
    'ntk_vector_products': NTK_VECTOR_PRODUCTS,
}

__all__ = [
    'Bool', 'Diagonal', 'Kernel', 'layer', 'requires', 'stax', 'predict',
    'empirical_ntk_fn_generic', 'monte_carlo_kernel_fn', 'JACOBIAN_CONTRACTION',
    'NTK_VECTOR_PRODUCTS', 'IMPLEMENTATIONS', 'nt_version',
]


def nt_version() -> str:
  return getattr(nt, '__version__', 'unknown')
