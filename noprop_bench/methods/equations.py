"""The paper's equations that more than one method uses, one function each, named after the equation
(reference sections 1-5). Every method calls these; none writes them again.

  Eq. 6    noised_label            a sample of q(z_t | y) = N(sqrt(ab_t) u_y, (1 - ab_t) I)
  Sec. 5   expected_embedding      u_hat = softmax(logits) @ W_Embed, a convex mixture of class embeddings
  Eq. 8/9  kl_to_prior             KL(q(z_0 | y) || N(0, I)) per row (closed form derived, not printed)
  Eq. 3/7  ancestral_step          z_t = a_t u_hat + b_t z_{t-1} + sqrt(c_t) eps
  Eq. 18   mix                     z_t = (1 - a_t) z_{t-1} + a_t u_hat   (the back-prop baseline's chain)
  Eq. 10   flow_path               z_t = t u_y + (1 - t) z_0 (+ sigma eps), target u_y - z_0   (NoProp-FM)
  Eqs. 15-16 radial_posterior      log p_hat(y | z_T) up to a constant: -|softmax(f(z_T)) @ W_Embed - u_y|^2 / 2 sigma^2

ab_t may be a scalar (one time for the batch) or a vector [B] (one time per example).
"""
from __future__ import annotations

import torch


def _per_row(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, 1) if v.ndim else v


def noised_label(u: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Eq. 6's marginal q(z_t | y) = N(sqrt(ab_t) u_y, 1 - ab_t), sampled."""
    alpha_bar = _per_row(alpha_bar)
    return alpha_bar.sqrt() * u + (1 - alpha_bar).sqrt() * torch.randn_like(u)


def expected_embedding(logits: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """Section 5: a block's output u_hat = softmax(logits) @ W_Embed (NoProp-DT, NoProp-CT, back-prop)."""
    return logits.softmax(dim=1) @ embeddings


def kl_to_prior(u: torch.Tensor, alpha_bar_0: torch.Tensor) -> torch.Tensor:
    """The KL term of Eqs. 8 and 9, KL(N(sqrt(ab_0) u, (1 - ab_0) I) || N(0, I)), per row [derived]:
    0.5 [ab_0 |u|^2 - d ab_0 - d log(1 - ab_0)]."""
    d = u.shape[1]
    return 0.5 * (alpha_bar_0 * u.pow(2).sum(1) - d * alpha_bar_0 - d * torch.log1p(-alpha_bar_0))


def ancestral_step(z: torch.Tensor, u_hat: torch.Tensor, a, b, c) -> torch.Tensor:
    """Eq. 3 (with Eq. 7's p(z_t | z_{t-1}, x)): z_t = a_t u_hat + b_t z_{t-1} + sqrt(c_t) eps."""
    return a * u_hat + b * z + c.sqrt() * torch.randn_like(z)


def mix(z: torch.Tensor, u_hat: torch.Tensor, a) -> torch.Tensor:
    """Eq. 18, the back-prop baseline's residual chain: z_t = (1 - a_t) z_{t-1} + a_t u_hat."""
    return (1 - a) * z + a * u_hat


def flow_path(u: torch.Tensor, z0: torch.Tensor, t: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. 10-11: the point z_t = t u_y + (1 - t) z_0 (+ sigma eps) on NoProp-FM's linear path at t [B],
    and the target velocity u_y - z_0."""
    s = _per_row(t)
    return s * u + (1 - s) * z0 + sigma * torch.randn_like(u), u - z0


def radial_posterior(logits: torch.Tensor, embeddings: torch.Tensor, sigma: float) -> torch.Tensor:
    """Eqs. 15-16, the "posterior" class probability of Figure 4, as class scores [B, m]: with
    y_tilde = softmax(f(z_T)) @ W_Embed, p_hat(y | z_T) is proportional to exp(-|y_tilde - u_y|^2 / 2 sigma^2).

    The paper does not give sigma. OUR CHOICE: `sigma` is in units of the root-mean-square distance between
    two class embeddings (computed without gradient, so it follows learned embeddings without being a way
    for the loss to move them), so one value means the same sharpness for one-hot, dim20 and prototype rows."""
    u = embeddings
    m = len(u)
    with torch.no_grad():
        spread = torch.cdist(u.float(), u.float()).pow(2).sum() / max(m * (m - 1), 1)
    y_tilde = expected_embedding(logits, u)
    sq_dist = y_tilde.pow(2).sum(1, keepdim=True) - 2 * y_tilde @ u.T + u.pow(2).sum(1)
    return -sq_dist / (2 * sigma ** 2 * spread.clamp_min(1e-12))
