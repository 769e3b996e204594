"""Tests run in float64: kernels and spectra are compared to 1e-10.

XLA compiles the tests' programs at LLVM optimisation level 0 (`XLA_FLAGS`, set before JAX
loads, so the scripts the tests start inherit it): most test programs are tiny and run once,
compiling is most of their time, and level 0 halves it. The operations and their order are
XLA's (HLO optimisations are unchanged), so numbers agree with level 2 to float rounding
(measured: kernel distances to 1e-9 relative); every test compares numbers with a tolerance or
against a run under the same flags. BUILD.md, "Tests". For the same reason XLA:CPU emits fused
loops with its elemental emitters (`compiles.fast_cpu_compile`: a third less compile time).

Compiled programs are kept in one persistent compilation cache (below)."""
import os
import tempfile

# What the user had, for the runs that must see a user's flags (`oracles.user_env`).
os.environ.setdefault('NTK_ATTENTION_USER_XLA_FLAGS', os.environ.get('XLA_FLAGS', ''))
for _name in ('JAX_COMPILATION_CACHE_DIR', 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'):
  os.environ.setdefault('NTK_ATTENTION_USER_' + _name, os.environ.get(_name, ''))
if '--xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_backend_optimization_level=0').strip()
# One persistent compilation cache for the tests and the scripts they start (both xdist
# workers, every subprocess): many tests run the same tiny programs (digits, 60 points, width
# 16) in separate processes. A test that counts compilations passes its own cache folder.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
    tempfile.gettempdir(), f'ntk_attention-tests-jax-{os.getuid()}'))
# Every program, however quick to compile (as reproduce.py does): most of a script's programs
# are eager operations compiled in a few ms each, and each subprocess would compile them again.
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

# XLA:CPU's elemental emitters instead of its fusion emitters: a third less compile time
# (`compiles.fast_cpu_compile`, docs/method.md §16; the scripts keep XLA's default).
from ntk_attention import compiles  # noqa: E402  (imports jax; its backend starts later)
compiles.fast_cpu_compile()
# The op_by_op stages (prefix features, trained features, analytic kernels) as one program
# each under these flags too, not one per operation and shape: XLA's rounding at these flags,
# the same numbers to float64 rounding (tests/test_compiles.py); 7,168 -> 6,208 programs and
# 354 -> 323 s for a cold test run (2 cores).
os.environ.setdefault(compiles.OP_BY_OP_ENV, 'compile')

import jax  # noqa: E402  (after XLA_FLAGS: XLA reads it once, when the backend starts)

jax.config.update('jax_enable_x64', True)
