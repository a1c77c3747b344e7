"""Distributional heads: C51 (categorical), QR-DQN (fixed quantiles) and IQN (sampled quantiles).

Each head is a :class:`~dqn_jax.heads.Head` (see :mod:`dqn_jax.heads`) built from the small
batched functions here (rlax ``value_learning`` style, ``B`` = batch, ``A`` = actions):

- :func:`categorical_projection` and :func:`categorical_double_q_learning`: the C51 target
  projected onto a fixed support and its cross-entropy (Bellemare et al. 2017).
- :func:`quantile_huber_loss` and :func:`quantile_q_learning`: the quantile Huber loss of
  QR-DQN (Dabney et al. 2017, eq. 10) and IQN (Dabney et al. 2018).

Network output layouts: categorical logits ``f32[B, A, M]``; quantiles ``f32[B, A, N]`` at
:func:`quantile_midpoints`; IQN ``(quantiles f32[B, T, A], taus f32[B, T])`` for
``forward(params, obs, key, num_taus=T)``. ``discount`` is ``gamma**k * (1 - terminated)``
(see :class:`~dqn_jax.replay.Transition`). Every function is jittable and vmappable.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from dqn_jax import losses
from dqn_jax.heads import Head, LossTerms, network_outputs, take_actions
from dqn_jax.replay import Transition


def categorical_projection(
    support: jax.Array, target_support: jax.Array, probs: jax.Array
) -> jax.Array:
    """Projects distributions onto a fixed, evenly spaced support (C51's projection).

    ``support f32[M]`` (``M >= 2`` evenly spaced atoms ``z_i``, increasing), ``target_support
    f32[B, K]`` (atoms ``Tz_j``, any values) and ``probs f32[B, K]`` (their masses) ->
    ``f32[B, M]``: ``sum_j clip(1 - |clip(Tz_j, z_0, z_{M-1}) - z_i| / dz, 0, 1) * probs_j``
    with ``z_i = z_0 + i * dz`` (only ``z_0`` and ``z_{M-1}`` are read). Each clipped atom's
    mass goes to its two neighbouring ``z_i`` in proportion to closeness (all of it to ``z_i``
    when it lands on one), so mass is conserved. Same as
    ``rlax.categorical_l2_project(target_support[b], probs[b], support)`` for each ``b``.
    """
    chex.assert_rank([support, target_support, probs], [1, 2, 2])
    chex.assert_equal_shape([target_support, probs])
    num_atoms = support.shape[0]
    dz = (support[-1] - support[0]) / (num_atoms - 1)
    # In index units (z_i = z_0 + i * dz) the two weights of an atom sum to 1 even where the
    # float32 support is not exactly evenly spaced, so the projection keeps all the mass.
    position = jnp.clip((target_support - support[0]) / dz, 0.0, num_atoms - 1.0)
    below = jnp.floor(position)
    upper_weight = position - below
    below = below.astype(jnp.int32)
    above = jnp.minimum(below + 1, num_atoms - 1)
    # One scatter-add of 2 B K masses into the flat [B * M] output, O(B K), rather than the
    # dense [B, M, K] weights (which dominated a C51 update on a CPU) or a 2-D scatter (whose
    # [B K, 2] index arrays cost more to build than the scatter itself).
    batch = probs.shape[0]
    row_start = (jnp.arange(batch, dtype=jnp.int32) * num_atoms)[:, None]
    slots = jnp.concatenate([row_start + below, row_start + above], axis=1)
    masses = jnp.concatenate([probs * (1.0 - upper_weight), probs * upper_weight], axis=1)
    projected = jax.ops.segment_sum(
        masses.reshape(-1), slots.reshape(-1), num_segments=batch * num_atoms
    )
    return projected.reshape(batch, num_atoms)


def categorical_q_values(logits: jax.Array, atoms: jax.Array) -> jax.Array:
    """Expected values ``f32[...]`` of categorical distributions with ``logits f32[..., M]``
    over ``atoms f32[M]``: ``sum_i softmax(logits)_i * atoms_i``."""
    chex.assert_rank(atoms, 1)
    chex.assert_axis_dimension(logits, -1, atoms.shape[0])
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * atoms, axis=-1)


def categorical_double_q_learning(
    atoms: jax.Array,
    logits: jax.Array,
    action: jax.Array,
    reward: jax.Array,
    discount: jax.Array,
    logits_next: jax.Array,
    q_next_selector: jax.Array,
) -> jax.Array:
    """Categorical double Q-learning's cross-entropy ``f32[B]`` (nats).

    ``atoms f32[M]`` (evenly spaced), ``logits f32[B, A, M]`` of the online net at ``s``,
    ``action i32[B]``, ``reward f32[B]``, ``discount f32[B]``, ``logits_next f32[B, A, M]`` of
    the target net at ``s'`` and ``q_next_selector f32[B, A]`` (the online net's Q-values at
    ``s'``): with ``a* = argmax q_next_selector``, the target is the projection of atoms
    ``r + discount * atoms`` with masses ``softmax(logits_next[a*])`` onto ``atoms``, gradients
    stopped; the loss is ``-sum_i target_i * log_softmax(logits[a])_i``. Same as
    ``rlax.categorical_double_q_learning`` for each ``b``.
    """
    chex.assert_rank(
        [atoms, logits, action, reward, discount, logits_next, q_next_selector],
        [1, 3, 1, 1, 1, 3, 2],
    )
    chex.assert_equal_shape([logits, logits_next])
    chex.assert_equal_shape([action, reward, discount])
    chex.assert_equal_shape_prefix([logits, q_next_selector, action], 1)
    chex.assert_equal_shape_prefix([logits, q_next_selector], 2)
    chex.assert_axis_dimension(logits, 2, atoms.shape[0])
    best = jnp.argmax(q_next_selector, axis=-1)
    probs_next = jax.nn.softmax(take_actions(logits_next, best), axis=-1)
    target_support = reward[:, None] + discount[:, None] * atoms[None, :]
    target = jax.lax.stop_gradient(categorical_projection(atoms, target_support, probs_next))
    log_probs = jax.nn.log_softmax(take_actions(logits, action), axis=-1)
    return -jnp.sum(target * log_probs, axis=-1)


def categorical_head(num_atoms: int, v_min: float, v_max: float, double_q: bool = True) -> Head:
    """C51 / Rainbow: ``out`` is logits ``f32[B, A, num_atoms]`` over ``atoms = linspace(v_min,
    v_max, num_atoms)`` (return units); Q-values are the expected returns. The loss is
    :func:`categorical_double_q_learning`: the next action from the online net (``double_q``,
    Rainbow's) or from the target net (the C51 paper's and CleanRL's), its distribution from
    the target net; the priority is that cross-entropy, as in Rainbow."""
    if num_atoms < 2 or not v_min < v_max:
        raise ValueError(
            f"need num_atoms >= 2 and v_min < v_max, got {num_atoms}, {v_min}, {v_max}"
        )
    atoms = jnp.linspace(v_min, v_max, num_atoms, dtype=jnp.float32)

    def q_values(logits):
        return categorical_q_values(logits, atoms)

    def loss(forward, params, target_params, batch: Transition, key) -> LossTerms:
        logits, logits_next_online, logits_next_target = network_outputs(
            forward, params, target_params, batch, key
        )
        # Without double_q the online pass at s' is unused, and XLA drops it.
        selector = q_values(logits_next_online if double_q else logits_next_target)
        cross_entropy = categorical_double_q_learning(
            atoms,
            logits,
            batch.action,
            batch.reward,
            batch.discount,
            logits_next_target,
            selector,
        )
        q_sa = categorical_q_values(take_actions(logits, batch.action), atoms)
        return LossTerms(cross_entropy, cross_entropy, q_sa)

    return Head(q_values=q_values, loss=loss)


def quantile_midpoints(num_quantiles: int) -> jax.Array:
    """``f32[N]`` quantile fractions ``tau_hat_i = (2i + 1) / (2N)`` (QR-DQN's midpoints)."""
    return (jnp.arange(num_quantiles, dtype=jnp.float32) + 0.5) / num_quantiles


def quantile_huber_loss(
    quantiles: jax.Array, taus: jax.Array, targets: jax.Array, kappa: float = 1.0
) -> jax.Array:
    """The quantile Huber loss ``f32[B]`` of predictions at given fractions against samples.

    ``quantiles f32[B, N]`` (``theta_i``, at fractions ``taus f32[B, N]`` or ``f32[N]``, treated
    as constants) and ``targets f32[B, N']`` (``T_j``; the caller stops their gradient): with
    ``u_ij = T_j - theta_i``, ``rho_ij = |tau_i - 1{u_ij < 0}| * huber_kappa(u_ij) / kappa``,
    the loss is ``sum_i mean_j rho_ij`` (QR-DQN eq. 10, IQN eq. 3). ``kappa = 0`` is the plain
    quantile regression loss ``|tau_i - 1{u_ij < 0}| * |u_ij|``. ``rlax.quantile_regression_loss
    (huber_param=kappa)`` is the same without the ``1 / kappa`` (equal at ``kappa`` 1).
    """
    chex.assert_rank([quantiles, targets], 2)
    chex.assert_equal_shape_prefix([quantiles, targets], 1)
    if taus.ndim == 1:
        chex.assert_shape(taus, quantiles.shape[1:])
        taus = jnp.broadcast_to(taus, quantiles.shape)
    chex.assert_equal_shape([quantiles, taus])
    taus = jax.lax.stop_gradient(taus)
    u = targets[:, None, :] - quantiles[:, :, None]  # [B, N, N']
    weight = jnp.abs(taus[:, :, None] - (u < 0).astype(u.dtype))
    # kappa is a hyperparameter, not a traced value: the branch is static.
    penalty = jnp.abs(u) if kappa == 0 else losses.huber(u, kappa) / kappa
    return jnp.sum(jnp.mean(weight * penalty, axis=-1), axis=-1)


def quantile_q_learning(
    quantiles: jax.Array,
    taus: jax.Array,
    action: jax.Array,
    reward: jax.Array,
    discount: jax.Array,
    quantiles_next_selector: jax.Array,
    quantiles_next: jax.Array,
    kappa: float = 1.0,
) -> jax.Array:
    """Quantile Q-learning's loss ``f32[B]`` (QR-DQN, IQN).

    ``quantiles f32[B, A, N]`` of the online net at ``s`` (at fractions ``taus f32[B, N]`` or
    ``f32[N]``), ``action i32[B]``, ``reward f32[B]``, ``discount f32[B]``,
    ``quantiles_next_selector f32[B, A, K]`` (picks ``a* = argmax_a mean_k``) and
    ``quantiles_next f32[B, A, N']`` at ``s'``: :func:`quantile_huber_loss` of
    ``quantiles[a]`` against ``stop_gradient(r + discount * quantiles_next[a*])``. Same as
    ``rlax.quantile_q_learning`` for each ``b`` (which has the quantile axis first), with the
    ``1 / kappa`` of :func:`quantile_huber_loss`.
    """
    chex.assert_rank(
        [quantiles, action, reward, discount, quantiles_next_selector, quantiles_next],
        [3, 1, 1, 1, 3, 3],
    )
    chex.assert_equal_shape([action, reward, discount])
    chex.assert_equal_shape_prefix([quantiles, quantiles_next_selector, quantiles_next, action], 1)
    chex.assert_equal_shape_prefix([quantiles, quantiles_next_selector, quantiles_next], 2)
    best = jnp.argmax(jnp.mean(quantiles_next_selector, axis=-1), axis=-1)
    targets = reward[:, None] + discount[:, None] * take_actions(quantiles_next, best)
    return quantile_huber_loss(
        take_actions(quantiles, action), taus, jax.lax.stop_gradient(targets), kappa
    )


def quantile_head(num_quantiles: int, kappa: float = 1.0, double_q: bool = False) -> Head:
    """QR-DQN: ``out`` is quantiles ``f32[B, A, num_quantiles]`` at :func:`quantile_midpoints`
    (return units); Q-values are their means. The loss is :func:`quantile_q_learning` with the
    next action from the target net (the QR-DQN paper) or, with ``double_q``, from the online
    net, and its quantiles from the target net; priority = loss.
    """
    taus = quantile_midpoints(num_quantiles)

    def q_values(quantiles):
        return jnp.mean(quantiles, axis=-1)

    def loss(forward, params, target_params, batch: Transition, key) -> LossTerms:
        if double_q:
            quantiles, selector, quantiles_next = network_outputs(
                forward, params, target_params, batch, key
            )
        else:
            k_obs, k_target = jax.random.split(key)
            quantiles = forward(params, batch.obs, k_obs)
            quantiles_next = selector = forward(target_params, batch.next_obs, k_target)
        chex.assert_axis_dimension(quantiles, 2, num_quantiles)
        value = quantile_q_learning(
            quantiles,
            taus,
            batch.action,
            batch.reward,
            batch.discount,
            selector,
            quantiles_next,
            kappa,
        )
        return LossTerms(value, value, q_values(take_actions(quantiles, batch.action)))

    return Head(q_values=q_values, loss=loss)


def iqn_head(
    num_tau_samples: int,
    num_tau_prime_samples: int,
    num_quantile_samples: int,
    kappa: float = 1.0,
    double_q: bool = False,
) -> Head:
    """IQN: ``out = (quantiles f32[B, T, A], taus f32[B, T])`` from ``forward(params, obs, key,
    num_taus=T)``; Q-values are the means over the ``T`` fractions, acting with ``T =
    num_quantile_samples`` (``K``). The loss (Algorithm 1 of Dabney et al. 2018) is
    :func:`quantile_q_learning` of ``N = num_tau_samples`` online quantiles at their sampled
    fractions, with ``a*`` from ``K`` target-net quantiles at ``s'`` (online-net quantiles with
    ``double_q``) and the targets from ``N' = num_tau_prime_samples`` more target-net quantiles
    (three independent draws); priority = loss."""

    def q_values(out):
        quantiles, _ = out
        return jnp.mean(quantiles, axis=1)

    def loss(forward, params, target_params, batch: Transition, key) -> LossTerms:
        k_obs, k_select, k_target = jax.random.split(key, 3)
        quantiles, taus = forward(params, batch.obs, k_obs, num_taus=num_tau_samples)
        selector, _ = forward(
            params if double_q else target_params,
            batch.next_obs,
            k_select,
            num_taus=num_quantile_samples,
        )
        quantiles_next, _ = forward(
            target_params, batch.next_obs, k_target, num_taus=num_tau_prime_samples
        )
        chex.assert_rank([quantiles, taus, selector, quantiles_next], [3, 2, 3, 3])
        chex.assert_axis_dimension(taus, 1, num_tau_samples)
        # [B, T, A] -> [B, A, T], the layout quantile_q_learning shares with QR-DQN.
        quantiles, selector, quantiles_next = (
            jnp.swapaxes(x, 1, 2) for x in (quantiles, selector, quantiles_next)
        )
        value = quantile_q_learning(
            quantiles,
            taus,
            batch.action,
            batch.reward,
            batch.discount,
            selector,
            quantiles_next,
            kappa,
        )
        q_sa = jnp.mean(take_actions(quantiles, batch.action), axis=-1)
        return LossTerms(value, value, q_sa)

    return Head(q_values=q_values, loss=loss, act_kwargs={"num_taus": num_quantile_samples})
