"""requirements.txt (the one-line install) and pyproject.toml (the grouped install) name the same packages."""
import os
import re

import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def requirement_lines(path):
    with open(path) as f:
        return {re.sub(r'\s+', '', line.split('#')[0]) for line in f if line.split('#')[0].strip()}


def test_requirements_match_pyproject():
    with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
        project = tomllib.load(f)['project']
    groups = project['optional-dependencies']
    listed = set(project['dependencies']) | {r for name, reqs in groups.items() if name != 'all' for r in reqs}
    assert requirement_lines(os.path.join(ROOT, 'requirements.txt')) == listed
    assert groups['all'] == [f"mmvae[{','.join(sorted(set(groups) - {'all'}))}]"]
