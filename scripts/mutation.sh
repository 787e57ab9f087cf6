#!/usr/bin/env bash
# Mutation testing of the core's algebra as a benchmark (not run by CI; docs/testing.md).
#
#   pip install -e '.[test,mutation]'
#   bash scripts/mutation.sh                 # every module below, one after the other
#   bash scripts/mutation.sh lfsr codes      # some of them
#
# Each module is mutated by mutmut in a scratch copy of the checkout (MUTATION_WORKDIR, default
# /tmp/hdsim-mutation/<module>; the checkout itself is never touched) against the test files that
# cover it, and the run prints one JSON object on stdout:
#   {"<module>": {"killed": k, "survived": s, "timeout": t, "no_tests": n, "total": ..., "score": ...}, ...}
# score = (killed + timeout) / (killed + survived + timeout), mutmut's own definition; mutants no
# test reaches ("no_tests") are listed apart. mutmut's progress goes to stderr; the surviving mutants
# of a module are listed with `cd $MUTATION_WORKDIR/<module> && mutmut results`.
# CPU heavy: MUTATION_JOBS (default 1) tests mutants in parallel, each under `nice -n 10`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
work=${MUTATION_WORKDIR:-/tmp/hdsim-mutation}
jobs=${MUTATION_JOBS:-1}
# one core per worker: torch's OpenMP threads spinning against other jobs on a shared 2-core machine
# slow the model's many small ops about tenfold (tests/conftest.py, one_torch_thread)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
command -v mutmut >/dev/null || { echo "error: mutmut is not installed (pip install -e '.[mutation]')" >&2; exit 2; }

# module -> "files to mutate (mutmut globs)|the test files that cover them"
declare -A only tests deselect tmult
only[functional]="hdsim/functional.py"
tests[functional]="tests/test_functional.py"
only[fixed]="hdsim/fixed/bcf.py hdsim/fixed/rounding.py hdsim/fixed/widths.py hdsim/fixed/compiled.py"
tests[fixed]="tests/test_fixed.py tests/test_fixed_compiled.py"
# fixed: a pytest -k expression leaves out the long decodes (docs/testing.md says which and why): a
# surviving mutant of the model re-runs every test that reaches it, and these take most of the files'
# time; the same code paths stay reached by the short model-vs-compiled comparisons of both files
deselect[fixed]="not test_same_lfsr_seed_same_result_and_float_agreement_at_wide_words \
and not test_bench_fixed_decodes_on_the_compiled_twin_with_the_models_results \
and not (test_compiled_decoder_matches_the_model_every_iteration and (cfg1 or cfg2 or cfg4))"
# mutmut's time limit per mutant is (the covering tests' stats time + 10 s) x multiplier; fixed's stats
# pass includes the numba kernels' first compiles (about 250 of its 360 s), so 5x would let a mutant
# that stalls a decode (one that never converges) run for 30 minutes; 0.8x stops it after about 5
tmult[fixed]=0.8
only[lfsr]="hdsim/lfsr.py"
tests[lfsr]="tests/test_lfsr.py"
only[codes]="hdsim/codes.py"
# codes: its own tests and the algebra's; tests/test_bcf.py (minutes of sampled BCF decodes that use
# the codebooks only as fixtures) is left out: every surviving mutant would re-run all of it
tests[codes]="tests/test_codes.py tests/test_functional.py"
order=(functional fixed lfsr codes)

modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=("${order[@]}")
for m in "${modules[@]}"; do
  [ -n "${only[$m]:-}" ] || { echo "error: module: unknown '$m' (expected one of: ${order[*]})" >&2; exit 2; }
done

toml_list() { python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@"; }

for m in "${modules[@]}"; do
  dir="$work/$m"
  rm -rf "$dir" && mkdir -p "$dir"
  # the sources, tests and configuration the tests need (tests/test_fixed.py reads docs/fixed_point.md's
  # table); the compiled kernels' numba cache stays behind
  cp -r "$repo/hdsim" "$repo/tests" "$repo/docs" "$repo/pyproject.toml" "$dir/"
  find "$dir" -name __pycache__ -prune -exec rm -rf {} +
  # shellcheck disable=SC2086
  selection=$(toml_list ${tests[$m]})
  [ -z "${deselect[$m]:-}" ] || selection=$(toml_list ${tests[$m]} -k "${deselect[$m]}")
  cat >>"$dir/pyproject.toml" <<EOF

[tool.mutmut]
source_paths = ["hdsim"]
only_mutate = $(toml_list ${only[$m]})
pytest_add_cli_args_test_selection = $selection
# mutmut runs the tests in mutants/, where it copies tests/ and these (tests/test_fixed.py reads docs/)
also_copy = ["docs/"]
# the library's doctests and the configured testpaths stay out: only the named test files judge
pytest_add_cli_args = ["-p", "no:cacheprovider", "-o", "addopts=", "-x", "-q"]
# torch is not fork-safe after the suite's first run: workers fork from a clean server
process_isolation = "forkserver"
timeout_multiplier = ${tmult[$m]:-5.0}
timeout_constant = 10.0
use_git_change_detection = false
EOF
  echo "mutation: $m (${only[$m]}) against ${tests[$m]}${deselect[$m]:+ -k '${deselect[$m]}'}" >&2
  (cd "$dir" && nice -n 10 mutmut run --max-children "$jobs" >&2) || echo "mutation: mutmut run $m exited $?" >&2
done

python3 - "$work" "${modules[@]}" <<'EOF'
import json
import sys
from pathlib import Path

# mutmut's exit codes per mutant (mutmut.stats.status_by_exit_code)
KILLED, SURVIVED, NO_TESTS, TIMEOUT = {1, 3}, {0}, {5, 33}, {36, 24, -24, 152, 255}
work, modules = Path(sys.argv[1]), sys.argv[2:]
out = {}
for m in modules:
    codes = []
    for meta in sorted((work / m / "mutants").rglob("*.meta")):
        codes += list(json.loads(meta.read_text()).get("exit_code_by_key", {}).values())
    k = sum(c in KILLED for c in codes)
    s = sum(c in SURVIVED for c in codes)
    t = sum(c in TIMEOUT for c in codes)
    n = sum(c in NO_TESTS for c in codes)
    tested = k + s + t
    out[m] = {"killed": k, "survived": s, "timeout": t, "no_tests": n, "other": len(codes) - tested - n,
              "total": len(codes), "score": round((k + t) / tested, 4) if tested else None}
print(json.dumps(out))
EOF
