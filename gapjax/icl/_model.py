"""GPT-2-style decoder predicting a mean and a standard deviation in context."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from gapjax._checks import check_choice, check_int, check_ndim

POS_ENCODINGS = ("learned", "none")
TOKEN_FORMATS = ("interleaved", "paired")
SCALE_HEADS = ("softplus", "log_variance")

# (n_layer, n_head, n_embd). "official" is the paper's GPT-2 configuration.
PRESETS = {
    "official": (12, 8, 256),
    "small": (6, 4, 128),
    "tiny": (3, 4, 64),
}


def _check_xs_ys(xs, ys):
    check_ndim("xs", xs, ndim=3)
    if jnp.shape(ys) != jnp.shape(xs)[:2]:
        raise ValueError(f"ys must have shape {jnp.shape(xs)[:2]} (B, T), got "
                         f"{jnp.shape(ys)}")


def interleave(xs: jax.Array, ys: jax.Array) -> jax.Array:
    """Tokens ``x_1, (y_1, 0..0), x_2, (y_2, 0..0), ...``: ``(B, 2T, d)``."""
    _check_xs_ys(xs, ys)
    y_tok = jnp.zeros_like(xs).at[..., 0].set(ys)
    b, t, d = xs.shape
    return jnp.stack([xs, y_tok], axis=2).reshape(b, 2 * t, d)


def pair_tokens(xs: jax.Array, ys: jax.Array) -> jax.Array:
    """Tokens ``[x_t, x_{t-1}, y_{t-1}]`` (zeros for ``t = 0``): ``(B, T, 2d + 1)``.

    One token per position carrying the query and the previous pair, so that the
    causal prefix of token ``t`` holds exactly the pairs ``0..t-1`` and ``x_t``.
    """
    _check_xs_ys(xs, ys)
    prev = jnp.concatenate([xs, ys[..., None]], axis=-1)
    prev = jnp.pad(prev, ((0, 0), (1, 0), (0, 0)))[:, :-1]
    return jnp.concatenate([xs, prev], axis=-1)


def attention_mask(num_tokens: int, window: int | None,
                   tokens_per_pair: int = 2) -> jax.Array:
    """Boolean ``(N, N)`` mask: causal, and with ``window = S`` a sliding window.

    With window ``S`` the query token of position ``t`` sees the ``S`` previous
    pairs ``(x_{t-S}, y_{t-S}) .. (x_{t-1}, y_{t-1})`` and ``x_t``: the last
    ``2 S + 1`` tokens when interleaved (``tokens_per_pair = 2``), the last
    ``S + 1`` paired tokens (``tokens_per_pair = 1``; token ``t-S`` carries
    ``x_{t-S}`` only as a query, its pair is ``t-S-1``, so ``S`` tokens back
    hold pairs ``t-S..t-1``). One layer; depth widens the receptive field.
    """
    check_int("num_tokens", num_tokens, min=1)
    check_int("window", window, min=1, allow_none=True)
    check_choice("tokens_per_pair", tokens_per_pair, (1, 2))
    i = jnp.arange(num_tokens)[:, None]
    j = jnp.arange(num_tokens)[None, :]
    mask = j <= i
    if window is not None:
        span = 2 * window if tokens_per_pair == 2 else window - 1
        mask = mask & (i - j <= span)
    return mask


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                     mask: jax.Array) -> jax.Array:
    """Masked softmax attention, ``softmax(q k^T / sqrt(c) + mask) v`` per head.

    ``q, k, v (B, N, H, C)``, ``mask (N, N)`` boolean (every row must keep at
    least one key, as causal masks keep the diagonal); returns ``(B, N, H, C)``.
    Equal to GPT-2's eager attention (scores, masked fill, softmax, product)
    up to float rounding; computed with the heads moved ahead of the tokens, the
    scale applied to ``q``, the mask as an additive bias and the softmax
    normalisation applied after the product with ``v`` (a ``(B, H, N, C)``
    divide instead of ``(B, H, N, N)``), which needs fewer passes over the
    ``(B, H, N, N)`` scores (benchmarks/bench_icl.py measures the whole step).
    """
    n = q.shape[1]
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must share the shape (B, N, H, C); got {q.shape}, "
                         f"{k.shape}, {v.shape}")
    if jnp.shape(mask) != (n, n):
        raise ValueError(f"mask must have shape (N, N) = ({n}, {n}), got {jnp.shape(mask)}")
    if jnp.result_type(mask) != jnp.bool_:
        raise TypeError(f"mask must be boolean (True: attend), got {jnp.result_type(mask)}")
    if not jnp.issubdtype(q.dtype, jnp.floating):
        raise TypeError(f"q, k, v must be floating point, got {q.dtype}")
    scale = jnp.asarray(1.0 / jnp.sqrt(q.shape[-1]), q.dtype)
    q, k, v = (jnp.swapaxes(t, 1, 2) for t in (q * scale, k, v))
    bias = jnp.where(mask, 0.0, jnp.finfo(q.dtype).min).astype(q.dtype)
    logits = q @ jnp.swapaxes(k, -1, -2) + bias[None, None]
    p = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, -1, keepdims=True)))
    o = (p @ v) / jnp.sum(p, -1, keepdims=True)
    return jnp.swapaxes(o, 1, 2)


class SplitDense(nn.Module):
    """``Dense(parts * features)`` whose output comes back as ``parts`` arrays.

    The parameters are those of ``nn.Dense(parts * features)`` (``kernel (in,
    parts * features)``, ``bias``), so checkpoints and GPT-2's fused ``c_attn``
    layout are unchanged; each part is its own matmul with a slice of the
    kernel, whose backward pass needs no concatenation of the parts' gradients
    w.r.t. a fused output (about 20% of a block's step on a CPU).
    """

    features: int
    parts: int = 3
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        f = self.features
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.parts * f),
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.parts * f,),
                          self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias)
        lead = (1,) * (x.ndim - 1)
        return tuple(x @ kernel[:, i * f:(i + 1) * f] + bias[i * f:(i + 1) * f].reshape(lead + (f,))
                     for i in range(self.parts))


class Block(nn.Module):
    """Pre-LayerNorm GPT-2 block (attention + 4x GELU MLP)."""

    n_head: int
    window: int | None = None
    tokens_per_pair: int = 2

    @nn.compact
    def __call__(self, h):
        b, n, e = h.shape
        hd = e // self.n_head
        init = nn.initializers.normal(0.02)
        a = nn.LayerNorm(epsilon=1e-5, name="ln_1")(h)
        q, k, v = (t.reshape(b, n, self.n_head, hd)
                   for t in SplitDense(e, 3, kernel_init=init, name="c_attn")(a))
        mask = attention_mask(n, self.window, self.tokens_per_pair)
        o = causal_attention(q, k, v, mask).reshape(b, n, e)
        h = h + nn.Dense(e, kernel_init=init, name="c_proj")(o)
        m = nn.LayerNorm(epsilon=1e-5, name="ln_2")(h)
        m = nn.Dense(4 * e, kernel_init=init, name="c_fc")(m)
        m = jax.nn.gelu(m, approximate=True)
        return h + nn.Dense(e, kernel_init=init, name="mlp_proj")(m)


class ICLTransformer(nn.Module):
    """Decoder transformer for in-context mean and variance prediction.

    Call: ``mu, sigma = model.apply(variables, xs, ys)`` with ``xs (B, T, d)``,
    ``ys (B, T)``; returns ``mu (B, T)``, ``sigma (B, T)``: the prediction of
    ``y_t`` from ``x_t`` and the ``t`` earlier pairs, read out at the x-tokens.

    Attributes:
      n_dims: covariate dimension ``d``.
      n_positions: maximum number of ``(x, y)`` pairs (prompts longer raise).
      n_embd, n_layer, n_head: width, depth, heads (see :data:`PRESETS`).
      pos_encoding: ``"learned"`` (GPT-2 position embeddings over ``2T`` tokens)
        or ``"none"`` (causal masking only).
      window: context window ``S`` in pairs (sliding-window attention) or None.
      scale_head: ``"softplus"`` (``sigma = softplus(s)``, the paper) or
        ``"log_variance"`` (``sigma = exp(s / 2)``).
      token_format: ``"interleaved"`` (the paper: ``x_t`` then ``(y_t, 0..0)``,
        read out at x-tokens) or ``"paired"`` (one token ``[x_t, x_{t-1},
        y_{t-1}]`` per position, see :func:`pair_tokens`; trains much faster
        on a CPU, used by the quick/medium presets).
    """

    n_dims: int
    n_positions: int
    n_embd: int = 64
    n_layer: int = 3
    n_head: int = 4
    pos_encoding: str = "learned"
    window: int | None = None
    scale_head: str = "softplus"
    token_format: str = "interleaved"

    def __post_init__(self):
        for name in ("n_dims", "n_positions", "n_embd", "n_layer", "n_head"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head "
                             f"({self.n_head})")
        if self.pos_encoding not in POS_ENCODINGS:
            raise ValueError(f"pos_encoding must be one of {POS_ENCODINGS}, got "
                             f"{self.pos_encoding!r}")
        if self.scale_head not in SCALE_HEADS:
            raise ValueError(f"scale_head must be one of {SCALE_HEADS}, got "
                             f"{self.scale_head!r}")
        if self.token_format not in TOKEN_FORMATS:
            raise ValueError(f"token_format must be one of {TOKEN_FORMATS}, got "
                             f"{self.token_format!r}")
        if self.window is not None and (isinstance(self.window, bool)
                                        or not isinstance(self.window, int)
                                        or self.window < 1):
            raise ValueError(f"window must be None or a positive int, got {self.window!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, xs, ys):
        check_prompt(xs, ys, self.n_dims, self.n_positions)
        tpp = 2 if self.token_format == "interleaved" else 1
        tokens = interleave(xs, ys) if tpp == 2 else pair_tokens(xs, ys)
        init = nn.initializers.normal(0.02)
        h = nn.Dense(self.n_embd, kernel_init=init, name="read_in")(tokens)
        if self.pos_encoding == "learned":
            wpe = self.param("wpe", init, (tpp * self.n_positions, self.n_embd))
            h = h + wpe[: tokens.shape[1]][None]
        for i in range(self.n_layer):
            h = Block(self.n_head, self.window, tpp, name=f"block_{i}")(h)
        h = nn.LayerNorm(epsilon=1e-5, name="ln_f")(h)
        out = nn.Dense(2, kernel_init=init, name="read_out")(h[:, ::tpp])
        mu, s = out[..., 0], out[..., 1]
        if self.scale_head == "softplus":
            sigma = jax.nn.softplus(s)
        else:
            sigma = jnp.exp(0.5 * s)
        return mu, sigma


def check_prompt(xs, ys, n_dims: int, n_positions: int | None = None) -> None:
    """Raises ValueError on a malformed prompt (shapes are static under jit)."""
    if xs.ndim != 3:
        raise ValueError(f"xs must have shape (batch, T, d), got {xs.shape}")
    if xs.shape[-1] != n_dims:
        raise ValueError(f"xs has covariate dimension {xs.shape[-1]} but the model "
                         f"expects d = {n_dims}")
    if ys.shape != xs.shape[:2]:
        raise ValueError(f"ys must have shape {xs.shape[:2]} (batch, T), got {ys.shape}")
    if n_positions is not None and xs.shape[1] > n_positions:
        raise ValueError(f"prompt of {xs.shape[1]} pairs is longer than the model's "
                         f"maximum n_positions = {n_positions}")
    for name, a in (("xs", xs), ("ys", ys)):
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(f"{name} must be floating point, got {a.dtype}")


def make_model(preset: str, n_dims: int, n_positions: int, **kwargs) -> ICLTransformer:
    """An :class:`ICLTransformer` from a named preset (``official``, ``small``, ``tiny``)."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    n_layer, n_head, n_embd = PRESETS[preset]
    return ICLTransformer(n_dims=n_dims, n_positions=n_positions, n_layer=n_layer,
                          n_head=n_head, n_embd=n_embd, **kwargs)


def model_config(model: ICLTransformer) -> dict:
    """The module's hyper-parameters as a dict (for logs)."""
    return {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
            if f.name not in ("parent", "name")}
