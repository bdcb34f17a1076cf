"""Joint-posterior rules: how a multimodal model builds q(z | x_S) from its modalities' experts
q_m(z|x_m), and which objectives it trains with (`--joint-posterior NAME`).

A rule is a class registered with `@register_joint`, with
    name                         the --joint-posterior key
    family                       None, or the distribution family the experts and the prior must have
                                 (a product of experts is closed-form for Gaussians only)
    components(experts, prior, full) -> list of distributions
                                 the uniform mixture's components for the given experts (a subset of
                                 the modalities; `full`: all of them); `prior` is the prior expert: the
                                 model's prior p(z), or N(0, I) with --prior-expert unit (accepted for
                                 rules that set `prior_expert = True`)
    objectives() -> ObjectiveSet the --obj choices, their --looser forms and the test bound
    describe(names, full) -> list of str
                                 the components of q(z | x_names) in words (reports, JSON)
Every module in this package is imported: a new rule is one new file.
"""
import importlib
import pkgutil

from ...errors import UserError

JOINTS = {}


def register_joint(cls):
    if cls.name in JOINTS:
        raise ValueError(f'joint posterior {cls.name!r} registered twice')
    JOINTS[cls.name] = cls
    return cls


def joint_rule(name):
    if name not in JOINTS:
        raise UserError(f"unknown joint posterior {name!r}: choose one of {', '.join(sorted(JOINTS))}")
    return JOINTS[name]


for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f'{__name__}.{_m.name}')
