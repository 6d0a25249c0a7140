"""Diagnostics that explain a number: at every evaluation point, what each part of a model gets right.

They go to `diagnostics.csv` beside `results.csv`, one tidy row per measurement:
  cell_id, method, dataset, embedding, seed, epoch, step   where in which run (as in results.csv)
  diagnostic   what is measured (below)
  block        NoProp-DT / back-prop block t (1..T), else empty
  t            continuous time in [0, 1] (a bin's centre for per-t accuracies), else empty
  z            the label input the network was given: "q" (z ~ q(z | y), the training distribution),
               "zero" (z = 0: the image alone), "chain" (back-prop's own forward chain), else empty
  value, n     the measurement and the number of images it is over

  pred_classes   every method: distinct classes among the default inference's predictions (run 0)
                 on the whole evaluation split; 1 or 2 means the model has collapsed onto few classes
  block_acc      NoProp-DT: block t's argmax on its own training input z_{t-1} ~ q(z_{t-1} | y);
                 back-prop: block t's argmax along the chain (z = "chain")
  mix            back-prop: a_t = tanh(w_t), each block's weight in Eq. 18
  denoise_acc    NoProp-CT: argmax of the network's class logits at t; NoProp-FM: nearest embedding to
                 the predicted end point z_t + (1 - t) v_hat; each with z ~ q and with z = 0
  mse            NoProp-CT: ||u_hat - u_y||^2 at t with z ~ q (the per-t term of Eq. 9 before its weight)
  loss_weight    NoProp-CT: eta/2 SNR'(t), the weight Eq. 9 puts on that term at t
  gamma          NoProp-CT: the learned gamma(t) at t = 0 and t = 1 (the schedule's endpoints)
  goodness_pos, goodness_neg   Forward-Forward: each layer's goodness of positive and negative data
  worker_busy_s, worker_cpu_s, worker_wait_s, worker_steps   block-parallel NoProp-DT, per worker (`block`
                 = its rank + 1) over the interval before the point: seconds in its training loop, CPU
                 seconds it got there, seconds it had waited for the interval's command, steps made
  parent_wall_s, parent_cpu_s  block-parallel NoProp-DT: the main process over the same interval

They run with the training clock stopped, in eval mode, on the first `DIAG_IMAGES` images of the
evaluation split, with noise from their own seed in a forked RNG, so turning them off
(--no-diagnostics) leaves every row of results.csv unchanged (the tests check this).
"""
from __future__ import annotations

import torch

DIAG_COLUMNS = ["cell_id", "method", "dataset", "embedding", "seed", "epoch", "step", "diagnostic", "block", "t",
                "z", "value", "n"]
DIAG_IMAGES = 1000


@torch.no_grad()
def probe(method, split, seed: int, where: dict) -> list[dict]:
    """The method's own diagnostics (its `diagnostics(x, y)` hook) as tidy rows with `where` filled in."""
    hook = getattr(method, "diagnostics", None)
    if hook is None:
        return []
    device = split.labels.device
    n = min(DIAG_IMAGES, len(split))
    x, y = next(split.batches(n, shuffle=False))
    method.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        found = hook(x, y)
    return [{**where, "n": n, **row} for row in found]
