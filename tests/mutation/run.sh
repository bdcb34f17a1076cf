#!/usr/bin/env bash
# Mutation testing of one group of core modules with cosmic-ray (docs/testing.md), from the repository root:
#     tests/mutation/run.sh objectives               # config: tests/mutation/objectives.toml + operators.toml
#     tests/mutation/run.sh objectives --survivors   # test the session's surviving mutants again (new tests)
# cosmic-ray changes the source files in place, one mutant at a time, and restores them: run it in a clean
# copy of the repository (git worktree or clone), not in a tree with unsaved work. One process, nice'd, one
# thread. The session (mutation-NAME.sqlite) keeps the results: run.sh continues an interrupted session, and
# `cosmic-ray dump mutation-NAME.sqlite | python tests/mutation/score.py NAME --survivors` lists the survivors.
set -euo pipefail
name=$1
cfg=$(mktemp --suffix=.toml)  # the group's config and the shared operators (tests/mutation/operators.toml)
trap 'rm -f "$cfg"' EXIT
cat "tests/mutation/$name.toml" tests/mutation/operators.toml > "$cfg"
db=mutation-$name.sqlite
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD  # subprocess tests import this copy's src
if [ ! -e "$db" ]; then
    cosmic-ray init "$cfg" "$db"
    cr-filter-operators "$db" "$cfg"
    if grep -q 'line-filter' "$cfg"; then cr-filter-lines "$db" --config "$cfg"; fi
elif [ "${2:-}" = --survivors ]; then
    python -c "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(
        \"DELETE FROM work_results WHERE test_outcome = 'SURVIVED'\"); c.commit()" "$db"
fi
nice -n 19 cosmic-ray exec "$cfg" "$db"
cosmic-ray dump "$db" | python tests/mutation/score.py "$name"
