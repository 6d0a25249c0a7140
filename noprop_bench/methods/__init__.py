"""The method registry: the one list of methods that the CLI, suites and tests read.

Built on first use (importing this package imports no torch, so `noprop-bench list` stays fast):
METHODS is the built-in classes, then the methods other distributions register (plugins.py); BROKEN
maps a plugin name to why it was left out.
"""
from __future__ import annotations

from noprop_bench.methods.catalog import EMBEDDINGS  # noqa: F401

_REGISTRY: dict | None = None


def _registry() -> dict:
    global _REGISTRY
    if _REGISTRY is None:
        from noprop_bench.methods.backprop import Backprop
        from noprop_bench.methods.forward_forward import ForwardForward, ForwardForwardConv
        from noprop_bench.methods.diffusion_blocks import DiffusionBlocks, DiffusionBlocksBatchWeight
        from noprop_bench.methods.forward_gradient import ForwardGradient
        from noprop_bench.methods.local_learning import LocalDecoupled, LocalGreedy
        from noprop_bench.methods.neural_ode import Adjoint, BackpropODE
        from noprop_bench.methods.noprop_ct import NoPropCT
        from noprop_bench.methods.noprop_ct_reweighted import NoPropCTReweighted
        from noprop_bench.methods.noprop_dt import NoPropDT
        from noprop_bench.methods.noprop_dt_decoder import NoPropDTDecoder
        from noprop_bench.methods.noprop_fm import NoPropFM
        from noprop_bench.methods.plugins import load_plugins
        builtin = {cls.name: cls for cls in (NoPropDT, Backprop, NoPropCT, NoPropFM, Adjoint, BackpropODE,
                                             NoPropCTReweighted, NoPropDTDecoder, LocalGreedy, LocalDecoupled, ForwardForward,
                                             ForwardForwardConv, ForwardGradient, DiffusionBlocks,
                                             DiffusionBlocksBatchWeight)}
        plugins, broken = load_plugins(builtin)
        _REGISTRY = {"BUILTIN": builtin, "PLUGINS": plugins, "BROKEN": broken, "METHODS": {**builtin, **plugins}}
    return _REGISTRY


def get_method(name: str):
    registry = _registry()
    if name in registry["BROKEN"] and name not in registry["METHODS"]:
        raise ValueError(registry["BROKEN"][name])
    if name not in registry["METHODS"]:
        raise ValueError(f"unknown method '{name}'; valid methods: {', '.join(registry['METHODS'])}")
    return registry["METHODS"][name]


def __getattr__(name: str):
    if name in ("METHODS", "BUILTIN", "PLUGINS", "BROKEN"):
        return _registry()[name]
    if name in ("Method", "MethodConfig"):
        from noprop_bench.methods import base
        return getattr(base, name)
    raise AttributeError(f"module 'noprop_bench.methods' has no attribute {name!r}")


__all__ = ["METHODS", "BUILTIN", "PLUGINS", "BROKEN", "EMBEDDINGS", "Method", "MethodConfig", "get_method"]
