"""The mutation score of a cosmic-ray session: killed (a test failed, or the run timed out) over the mutants
tested (those the operator and line filters left); `--survivors` lists the surviving mutants' diffs, and those
that timed out (on a busy machine a slow test run can time out: run them again).

    cosmic-ray dump mutation-NAME.sqlite | python tests/mutation/score.py NAME [--survivors]
"""
import collections
import json
import sys


def outcome(result):
    if not result:
        return 'pending'
    if result.get('worker_outcome') in ('skipped', 'timeout'):
        return {'skipped': 'filtered', 'timeout': 'timeout'}[result['worker_outcome']]
    return result.get('test_outcome') or result['worker_outcome']


def main(name, survivors=False):
    counts = collections.Counter()
    for line in sys.stdin:
        item, result = json.loads(line)
        counts[outcome(result)] += 1
        if survivors and outcome(result) in ('survived', 'timeout'):
            m = item['mutations'][0]
            print(f"--- {m['module_path']}:{m['start_pos'][0]} {m['definition_name']} {m['operator_name']}"
                  f"{' (timed out)' if outcome(result) == 'timeout' else ''}")
            print(result['diff'].split('\n', 3)[3])
    killed = counts['killed'] + counts['timeout']
    tested = killed + counts['survived']
    print(f"{name}: {tested} mutants tested, {killed} killed ({counts['timeout']} by a timeout), "
          f"{counts['survived']} survived: score {100 * killed / max(tested, 1):.0f} % ({dict(counts)})")


if __name__ == '__main__':
    main(sys.argv[1], '--survivors' in sys.argv[2:])
