"""The method registry: the one list of methods that the CLI, suites and tests read."""
from noprop_bench.methods.backprop import Backprop
from noprop_bench.methods.base import Method, MethodConfig
from noprop_bench.methods.embeddings import EMBEDDINGS
from noprop_bench.methods.neural_ode import Adjoint, BackpropODE
from noprop_bench.methods.noprop_ct import NoPropCT
from noprop_bench.methods.noprop_ct_reweighted import NoPropCTReweighted
from noprop_bench.methods.noprop_dt import NoPropDT
from noprop_bench.methods.noprop_fm import NoPropFM
from noprop_bench.methods.plugins import load_plugins

BUILTIN: dict[str, type[Method]] = {
    cls.name: cls for cls in (NoPropDT, Backprop, NoPropCT, NoPropFM, Adjoint, BackpropODE, NoPropCTReweighted)
}
# methods other distributions register (methods/plugins.py); BROKEN: name -> why one was left out
PLUGINS, BROKEN = load_plugins(BUILTIN)
METHODS: dict[str, type[Method]] = {**BUILTIN, **PLUGINS}


def get_method(name: str) -> type[Method]:
    if name in BROKEN and name not in METHODS:
        raise ValueError(BROKEN[name])
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}'; valid methods: {', '.join(METHODS)}")
    return METHODS[name]


__all__ = ["METHODS", "BUILTIN", "PLUGINS", "BROKEN", "EMBEDDINGS", "Method", "MethodConfig", "get_method"]
