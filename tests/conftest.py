"""Tests run in float64: kernels and spectra are compared to 1e-10."""
import jax

jax.config.update('jax_enable_x64', True)
