"""The built-in methods by name, with the line `noprop-bench list` shows and the paper each follows.
Readable without importing torch; each method class takes its `summary` from here, and the registry
(methods/__init__.py) holds the same names (a test checks both)."""
from __future__ import annotations

from typing import NamedTuple


class Entry(NamedTuple):
    summary: str
    paper: str


BUILTIN: dict[str, Entry] = {
    "backprop": Entry("back-prop baseline: the same blocks chained (Eqs. 17-19), trained end to end",
                      "Li, Teh & Pascanu 2025, Eqs. 17-19"),
    "noprop-dt": Entry("NoProp-DT: T blocks, each trained alone as a denoiser of the label embedding (Eq. 8)",
                       "Li, Teh & Pascanu 2025, arXiv 2503.24322, Algorithm 1"),
    "adjoint": Entry("adjoint neural ODE: the CT network as a vector field, odeint_adjoint",
                     "Chen, Rubanova, Bettencourt & Duvenaud 2018, arXiv 1806.07366"),
    "noprop-ct": Entry("NoProp-CT: one network denoising in continuous time, learned noise schedule (Eq. 9)",
                       "Li, Teh & Pascanu 2025, Algorithm 2"),
    "noprop-fm": Entry("NoProp-FM: flow matching from noise to the label embedding (Eqs. 10-13)",
                       "Li, Teh & Pascanu 2025, Algorithm 3"),
    "backprop-ode": Entry("the same neural ODE trained by back-propagating through the unrolled solver (odeint)",
                          "not in the paper: the adjoint's model with direct back-propagation"),
    "local-greedy": Entry("local learning on NoProp's blocks: T passes, each block trained alone by its own "
                          "cross-entropy on a detached input", "Belilovsky, Eickenberg & Oyallon 2019, arXiv 1812.11446"),
    "local-decoupled": Entry("local learning on NoProp's blocks: every block trained every step by its own "
                             "cross-entropy, each block's backward on its own", "Belilovsky, Eickenberg & Oyallon 2020, arXiv 1901.08164"),
    "forward-forward": Entry("Forward-Forward: fully connected layers, each trained by its own goodness of positive "
                             "and negative data", "Hinton 2022, arXiv 2212.13345, section 3.3"),
    "forward-forward-conv": Entry("VARIANT of Forward-Forward on NoProp's three convolutions; not Hinton's network",
                                  "Hinton 2022, arXiv 2212.13345 (goodness and losses)"),
    "forward-gradient": Entry("LG-FG-A: forward gradients with activity perturbation and local greedy losses "
                              "(LocalMixer M/1/16)", "Ren, Kornblith, Liao & Hinton 2023, arXiv 2210.03310"),
    "diffusion-blocks": Entry("DiffusionBlocks: B blocks on NoProp's network, each a denoiser for its own range of "
                              "noise levels, one block per step", "Shing, Koyama & Akiba 2025, arXiv 2506.14202"),
    "diffusion-blocks-batch-weight": Entry("VARIANT of DiffusionBlocks: the public code's loss, the batch's mean "
                                           "EDM weight times its mean cross-entropy; not the paper's equation",
                                           "Shing, Koyama & Akiba 2025 (their public code)"),
    "noprop-dt-decoder": Entry("VARIANT of NoProp-DT: each block's output passes a learned tanh decoder; not a "
                               "paper row", "ANKITSANJYAL/NoPropagation (its 'with nonlinear decoder' runs)"),
    "noprop-ct-reweighted": Entry("VARIANT of NoProp-CT: Eq. 9 with the SNR'(t) weight replaced (config "
                                  "'weighting'); not a paper row", "Kingma & Gao 2023, arXiv 2303.00848 (weightings)"),
}


EMBEDDINGS = ("one-hot", "dim20", "prototype")


def summary(name: str) -> str:
    return BUILTIN[name].summary
