"""Closed-form empirical NTK of `mlp_attn_qkv` (docs/method.md §14).

The model, on one sequence of N tokens with context mask c (docs/method.md §2–§4):

  X̃ = Normalize(X)                               (N, d), rows of RMS 1
  Q_h = X̃ K_h,  Σ_h = Q_h Q_hᵀ/(d m),  P_h = φ(Σ_h) masked to context keys
  U = concat_h(P_h X̃ V_h)                         (N, H m)
  Y = U O/s,  s = √(m H d)                         (N, m)
  Z = Normalize(Y) = √m Y/‖Y‖                     (N, m)
  f_c = ReLU(W_std Z W/√m) a_c/√m_h               head, `a` frozen ±1

Every output f_ic depends on the parameters only through Z_i, so its gradient is a
per-token cotangent pulled back through the layers. With `g_ic = ∂f_ic/∂Z_i` and
`γ_ic = (√m/‖Y_i‖)(I − ŷ_i ŷ_iᵀ) g_ic` (the Normalize Jacobian), the NTK traced over the
C outputs (NT's mean) is the sum of one term per parameter group:

  Θ_W = (W_std²/(m m_h)) (Z Zᵀ) ⊙ (S Sᵀ)                               head
  Θ_O = (U Uᵀ) ⊙ ⟨Γ, Γ⟩ / s²                                           output proj.
  Θ_V = Σ_h (B_h B_hᵀ) ⊙ ⟨Δ_h, Δ_h⟩ / s²,  B_h = P_h X̃, Δ_h = Γ O_hᵀ   value proj.
  Θ_K = Σ_h [ (X̃X̃ᵀ) ⊙ ⟨A, A⟩ + T + Tᵀ + (Q_hQ_hᵀ) ⊙ ⟨B, B⟩ ] / (d m)²,
        T_ij = ⟨(X̃ Bᵀ)_ij, (A Q_hᵀ)_ij⟩                                query/key proj.

where `⟨F, F⟩_ij = mean_c F_ic·F_jc`, `O_h` are head h's m rows of O, and for the
query/key term `R_c[i, n] = ∂(Σ_k P_h[i,k] E_c[i,k])/∂Σ_h[i,n]` with
`E_c = Γ_c M_hᵀ`, `M_h = X̃ V_h O_h/s` (identity: `R = E ⊙ c`; softmax:
`R = P ⊙ (E − rowsum(P ⊙ E))`), `A_c = R_c Q_h` (N, m) and `B_c = R_c X̃` (N, d).
Cost `O(N² (d + m) C H)` and `O(N² C)` memory, against NT's Jacobian of N·C × #params.
"""
import jax
import jax.numpy as jnp

from ntk_attention import layers
from ntk_attention import models as models_lib
from ntk_attention import ntk_closed_form


def _rms_normalize(x):
  """`x·√d/‖x‖` per row and the row norms `(N, 1)` (layers.Normalize, eps = 0)."""
  norm = jnp.sqrt(jnp.sum(x ** 2, axis=-1, keepdims=True))
  return x * jnp.sqrt(x.shape[-1]).astype(x.dtype) / norm, norm


def _outer_mean(f):
  """`mean_c F_c F_cᵀ` for `f (C, N, k)` -> `(N, N)`."""
  return jnp.einsum('cik,cjk->ij', f, f) / f.shape[0]


def qkv_closed_form_ntk(x, context, prefix_params, head_params, mechanism: str = 'IDENTITY',
                        W_std: float = 1.0, head=None):
  """Empirical NTK of `Normalize → QKVAttention → Normalize → head` (module docstring).

  Args:
    x: `(N, d)` raw inputs of the sequence `[train; eval]`.
    context: `(N,)` boolean context mask (None: every token).
    prefix_params: `[(), (K (H, d, m), V (H, d, m), O (H m, m)), ()]`.
    head_params: `relu_head`'s `[(W (m, m_h), b), (), a (m_h, C)]` (`a` frozen), or the
      parameters of `head`.
    mechanism: 'IDENTITY' or 'SOFTMAX' (`layers.QKVAttention`).
    W_std: `relu_head`'s W_std (read from `head` when it is given).
    head: None (the study's `relu_head`), or a `models.Model` with this prefix whose head
      `ntk_closed_form` recognises: its head term `Θ_head` and cotangents `g = ∂f/∂Z` then
      come from `ntk_closed_form.forward_backward` (docs/method.md §17).

  Returns `(N, N)` in the dtype of the head's parameters: `J Jᵀ` traced (averaged) over the
  C outputs, the sum of the head, output, value and query/key terms.
  """
  if mechanism not in layers.MECHANISMS:
    raise ValueError(f'mechanism must be one of {tuple(layers.MECHANISMS)}, got {mechanism!r}.')
  general = head is not None and head.head_kind != 'relu_head'
  if head is not None and not general:
    W_std = layers.declared(head.head[1])['W_std']
  w_k, w_v, w_o = prefix_params[1]
  dtype = jax.tree_util.tree_leaves(head_params)[0].dtype
  w_k, w_v, w_o = (jnp.asarray(p, dtype) for p in (w_k, w_v, w_o))
  n_heads, d, m = w_k.shape
  xt, _ = _rms_normalize(jnp.asarray(x, dtype))
  n = xt.shape[0]
  c = layers._batched_context(context, n_heads, n, dtype)            # (H, N)
  s = jnp.sqrt(float(m * n_heads * d)).astype(dtype)

  q = jnp.einsum('nd,hdk->hnk', xt, w_k)                             # (H, N, m)
  p = layers.attention_pattern(q @ jnp.swapaxes(q, -1, -2) / (d * m), c,
                               layers.MECHANISMS[mechanism])        # (H, N, N)
  xv = jnp.einsum('nd,hdv->hnv', xt, w_v)                            # (H, N, m)
  u = jnp.moveaxis(p @ xv, 0, 1).reshape((n, n_heads * m))           # (N, H m)
  y = u @ w_o / s
  z, y_norm = _rms_normalize(y)

  # Head: Θ_W, and the cotangents g_ic = ∂f_ic/∂Z_i pulled back through Normalize.
  if general:
    terms, g = ntk_closed_form.forward_backward(head.head_layers, head_params, z, True)
    trained = models_lib.head_trained(head, head_params)
    theta = ntk_closed_form.layer_terms_ntk(terms, terms, trained)
    theta = jnp.zeros((n, n), dtype) + theta
  else:
    w, a = head_params[0][0], jnp.asarray(head_params[-1], dtype)
    m_h = w.shape[1]
    scale = W_std / jnp.sqrt(float(m)).astype(dtype)
    act = (z @ w * scale > 0).astype(dtype)                            # S (N, m_h)
    theta = (z @ z.T) * (act @ act.T) * (W_std ** 2 / (m * m_h))
    g = jnp.einsum('nr,rc,kr->cnk', act, a, w) * (scale / jnp.sqrt(float(m_h)).astype(dtype))
  y_hat = y / y_norm
  gam = (g - y_hat * jnp.sum(y_hat * g, -1, keepdims=True)) * (jnp.sqrt(float(m)) / y_norm)

  theta = theta + (u @ u.T) * _outer_mean(gam) / s ** 2              # Θ_O
  xx = xt @ xt.T
  for h in range(n_heads):
    o_h = w_o[h * m:(h + 1) * m]                                     # (m, m)
    b_h = p[h] @ xt                                                  # (N, d)
    theta = theta + (b_h @ b_h.T) * _outer_mean(gam @ o_h.T) / s ** 2   # Θ_V
    e = gam @ (xv[h] @ o_h / s).T                                    # (C, N, N)
    if mechanism == 'IDENTITY':
      r = e * c[h][None, None, :]
    else:
      r = p[h][None] * (e - jnp.sum(p[h][None] * e, -1, keepdims=True))
    r_q, r_x = r @ q[h], r @ xt                                      # (C, N, m), (C, N, d)
    cross = jnp.mean(jnp.einsum('id,cjd->cij', xt, r_x)
                     * jnp.einsum('cik,jk->cij', r_q, q[h]), axis=0)
    theta = theta + (xx * _outer_mean(r_q) + cross + cross.T
                     + (q[h] @ q[h].T) * _outer_mean(r_x)) / (d * m) ** 2   # Θ_K
  return theta

__all__ = ['qkv_closed_form_ntk']
