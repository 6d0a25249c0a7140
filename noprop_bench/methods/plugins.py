"""Methods from other distributions, found through the `noprop_bench.methods` entry-point group.

A distribution registers a Method subclass under the name the CLI will use, e.g. in its pyproject.toml:

    [project.entry-points."noprop_bench.methods"]
    local-ce = "noprop_bench_local_ce:LocalCE"

and, once installed (`pip install -e .`), the method is in the registry beside the built-in ones, so
--methods, suites, report and check see it. The contract is methods/base.py's: a Method subclass whose
`name` equals the entry-point name, with a Config dataclass derived from MethodConfig, `default_solver`,
and its own loss() and predict(). An entry point that fails to import or breaks the contract is left
out with a one-line reason naming its distribution; the built-in methods are never affected.
"""
from __future__ import annotations

import dataclasses
import inspect
from importlib import metadata

from noprop_bench.methods.base import Method, MethodConfig

GROUP = "noprop_bench.methods"


def _distribution(ep) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"


def contract_problem(obj, name: str) -> str | None:
    """Why `obj` cannot be the method registered as `name` (None: it can)."""
    if not (inspect.isclass(obj) and issubclass(obj, Method)):
        return f"it is {obj!r}, not a subclass of noprop_bench.methods.base.Method"
    if getattr(obj, "name", None) != name:
        return f"its class attribute name is {getattr(obj, 'name', None)!r}, not the entry-point name {name!r}"
    if not (dataclasses.is_dataclass(obj.Config) and issubclass(obj.Config, MethodConfig)):
        return "its Config is not a dataclass derived from noprop_bench.methods.base.MethodConfig"
    missing = [hook for hook in ("loss", "predict") if getattr(obj, hook) is getattr(Method, hook)]
    if missing:
        return f"it does not implement {' and '.join(f'{h}()' for h in missing)}"
    if not isinstance(getattr(obj, "default_solver", None), str):
        return "it has no default_solver (the name of its inference rule)"
    return None


def load_plugins(builtin: dict[str, type[Method]]) -> tuple[dict[str, type[Method]], dict[str, str]]:
    """(methods, broken): the entry points' classes by name, and a one-line reason for each one left out."""
    found, broken = {}, {}
    for ep in metadata.entry_points(group=GROUP):
        where = f"method '{ep.name}' from distribution {_distribution(ep)} (entry point {ep.value})"
        if ep.name in builtin or ep.name in found:
            broken[ep.name] = f"{where} is ignored: the name '{ep.name}' is already taken; rename the entry point"
            continue
        try:
            obj = ep.load()
        except Exception as e:  # anything its import raises is its problem, reported in one line
            broken[ep.name] = (f"{where} failed to import ({type(e).__name__}: {e}); fix that package or "
                               f"uninstall it")
            continue
        problem = contract_problem(obj, ep.name)
        if problem:
            broken[ep.name] = f"{where} does not implement the method interface: {problem} (noprop_bench/methods/base.py)"
            continue
        found[ep.name] = obj
    return found, broken
