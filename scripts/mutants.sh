#!/usr/bin/env bash
# Mutation testing of sqlkiller's src/: cargo-mutants with the native tests,
# then the loom suite on every mutant the native tests missed.
#
# Usage:
#   scripts/mutants.sh                        # every mutant of src/ (~350; 30-60 min)
#   scripts/mutants.sh --file src/state.rs    # one file
#   scripts/mutants.sh --file src/state.rs --re 'State::has'   # a few mutants
# Any arguments go to `cargo mutants` as they are (--file, --re, --exclude-re,
# --shard, ...; see `cargo mutants --help`). The flags this script sets itself
# (below) must not be repeated; change them with these variables instead:
#   MUTANTS_JOBS=2          cargo-mutants --jobs (the machine has 2 cores)
#   MUTANTS_TIMEOUT=120     cargo-mutants --timeout, seconds per mutant's test
#                           run (tests take ~5 s; tests/edges.rs waits 20 s
#                           before it calls something a hang; left alone,
#                           cargo-mutants would allow max(20 s, 5 x baseline),
#                           i.e. 20-30 s here)
#   LOOM_TIMEOUT=600        seconds for one loom suite run (build excluded)
#   LOOM_BUILD_TIMEOUT=1200 seconds for one loom build
#   MUTANTS_SKIP_NATIVE=1   reuse the last native run (target/mutants, its
#                           snapshot included) and only redo the loom step and
#                           the summary; arguments are then ignored
#   MUTANTS_SKIP_LOOM=1     native run and summary only
#
# Steps:
# 1. Snapshot the work tree (without target/ and .git/) into
#    target/mutants/tree and run `cargo mutants` on that snapshot, so that
#    edits made to the live tree meanwhile neither leak into the run nor get
#    touched by it (cargo-mutants itself copies the snapshot again into /tmp
#    for its builds). Native tests = `cargo test --package=sqlkiller
#    --features=tracing`: unit tests, every tests/*.rs (tests/logging.rs
#    needs `tracing`, which is why the feature is on; it only changes
#    src/log.rs) and the doctests (cargo-mutants runs plain `cargo test`, so
#    rustdoc runs the doc examples and README.md; they run last, only when
#    every other test binary passed). Not loom-tests: `-p sqlkiller` mutates
#    and tests that package only. Results: target/mutants/mutants.out/
#    (outcomes.json, missed.txt, caught.txt, diff/, log/).
# 2. For each mutant the native tests missed: apply its diff to the snapshot,
#    run the loom suite on it
#      RUSTFLAGS="--cfg loom" cargo test -p sqlkiller-loom-tests --release
#    (target dir target/loom-mutants, reused so each mutant only rebuilds
#    sqlkiller and the models: ~13 s a mutant, ~25 s more on a fresh target
#    dir), restore the file. A failing or timed-out loom suite catches the
#    mutant; one that does not build under --cfg loom stays missed (flagged).
#    The live tree is never written; a trap restores the snapshot's file on
#    Ctrl-C as well. Logs: target/mutants/loom/.
# 3. Print a table per file and the score, list every mutant still missed,
#    and write it all to target/mutants/summary.txt.
#    score = (caught + caught by loom + timed out) / (total - unviable).
#
# Exits 0 whatever the score (the table is the result); non-zero only when
# something did not run: baseline tests failing, bad arguments, Ctrl-C.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/target/mutants"
tree="$out/tree"
mutants_out="$out/mutants.out"
loom_logs="$out/loom"
loom_target="$root/target/loom-mutants"
loom_results="$out/loom-results.tsv"

jobs=${MUTANTS_JOBS:-2}
test_timeout=${MUTANTS_TIMEOUT:-120}
loom_timeout=${LOOM_TIMEOUT:-600}
loom_build_timeout=${LOOM_BUILD_TIMEOUT:-1200}
# Undocumented, for testing this script: also run the loom step on the first N
# mutants the native tests caught (reported apart, never counted in the score).
selftest=${MUTANTS_LOOM_SELFTEST:-0}

step() { printf '\n==> %s\n' "$*"; }

# Listing runs nothing: hand it to cargo-mutants on the live tree (read only).
for arg in "$@"; do
    case $arg in
        --list | --list-files | -h | --help | --version)
            exec cargo mutants --dir "$root" --package sqlkiller --features tracing "$@" ;;
    esac
done

start=$(date +%s)
mkdir -p "$out"

# ---------------------------------------------------------------- step 1
if [[ ${MUTANTS_SKIP_NATIVE:-0} != 1 ]]; then
    step "snapshot of the work tree -> ${tree#"$root"/}"
    rm -rf "$tree"
    mkdir -p "$tree"
    tar -C "$root" --exclude=./target --exclude=./.git --exclude=./mutants.out \
        --exclude=./mutants.out.old -cf - . | tar -C "$tree" -xf -

    step "cargo mutants (native tests; jobs $jobs, test timeout ${test_timeout}s)"
    set +e
    cargo mutants --dir "$tree" --package sqlkiller --features tracing \
        --output "$out" --no-shuffle --timeout "$test_timeout" --jobs "$jobs" "$@"
    rc=$?
    set -e
    # 0: all caught; 2: some missed; 3: some timed out. Anything else means
    # the run itself failed (1 usage, 4 baseline failed, 70 internal, signals).
    case $rc in
        0 | 2 | 3) ;;
        *) echo "cargo mutants failed (exit $rc): no summary" >&2; exit "$rc" ;;
    esac
else
    step "MUTANTS_SKIP_NATIVE=1: reusing ${mutants_out#"$root"/}"
    [[ -f $mutants_out/outcomes.json && -d $tree ]] \
        || { echo "no previous run in $out" >&2; exit 1; }
fi
rm -f "$loom_results"
native_end=$(date +%s)

# ---------------------------------------------------------------- step 2
# Mutants to give to loom, one per line: kind<TAB>file<TAB>diff<TAB>name,
# kind "missed" (counted) or "selftest" (a natively caught one, for testing).
todo="$out/loom-todo.tsv"
python3 - "$mutants_out/outcomes.json" "$selftest" >"$todo" <<'PY'
import json, sys
outcomes = json.load(open(sys.argv[1]))["outcomes"]
selftest = int(sys.argv[2])
for o in outcomes:
    if o["scenario"] == "Baseline":
        continue
    m = o["scenario"]["Mutant"]
    if o["summary"] == "MissedMutant":
        kind = "missed"
    elif o["summary"] == "CaughtMutant" and selftest > 0:
        selftest -= 1
        kind = "selftest"
    else:
        continue
    print("\t".join([kind, m["file"], o["diff_path"], m["name"]]))
PY

pending_file=""   # snapshot file currently mutated, restored by the traps
child=""          # pid of the running `timeout` (leader of its own process group)
restore() {
    if [[ -n $pending_file ]]; then
        cp "$out/orig.rs" "$tree/$pending_file"   # cp, not cp -p: a new mtime for cargo
        pending_file=""
    fi
}
on_signal() {
    trap - INT TERM
    # timeout(1) runs in a process group of its own, so Ctrl-C does not reach
    # cargo or the test binaries; TERM to timeout kills that whole group.
    if [[ -n $child ]]; then
        kill -TERM "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    restore
    echo "interrupted" >&2
    exit 130
}
trap restore EXIT
trap on_signal INT TERM

# run_limited SECONDS LOG COMMAND...: runs COMMAND in the snapshot under
# timeout(1), output appended to LOG, and returns its exit code (124: timed
# out). In the background with `wait`, so that a signal runs on_signal at once
# instead of after the command.
run_limited() {
    local secs=$1 log=$2 rc=0
    shift 2
    (cd "$tree" && exec timeout "$secs" "$@") >>"$log" 2>&1 </dev/null &
    child=$!
    wait "$child" || rc=$?
    child=""
    return "$rc"
}

# Applies one cargo-mutants diff to the snapshot, runs the loom suite, restores.
# Sets $verdict: loom-caught, loom-timeout, survived, loom-unviable or
# patch-failed. (Not run in a $(...) subshell, so that the traps above still
# see $pending_file and $child.)
verdict=""
loom_check() {
    local file=$1 diff=$2 log=$3 rc=0
    local cargo_loom=(env RUSTFLAGS="--cfg loom" cargo test -p sqlkiller-loom-tests
        --release --target-dir "$loom_target")
    cp "$tree/$file" "$out/orig.rs"
    pending_file=$file
    # cargo-mutants' diffs read "--- src/x.rs" / "+++ <mutant description>":
    # give patch the file name explicitly.
    if ! patch --silent --forward --fuzz=0 --no-backup-if-mismatch --reject-file=- \
        "$tree/$file" "$diff" >"$log" 2>&1; then
        restore
        verdict=patch-failed
        return
    fi
    touch "$tree/$file"
    # Build first, so that a mutant that does not compile under --cfg loom is
    # told apart from one the models reject.
    run_limited "$loom_build_timeout" "$log" "${cargo_loom[@]}" --no-run || rc=$?
    if ((rc != 0)); then
        restore
        verdict=loom-unviable
        return
    fi
    run_limited "$loom_timeout" "$log" "${cargo_loom[@]}" || rc=$?
    restore
    case $rc in
        0) verdict=survived ;;
        124) verdict=loom-timeout ;;
        *) verdict=loom-caught ;;
    esac
}

if [[ ${MUTANTS_SKIP_LOOM:-0} != 1 && -s $todo ]]; then
    n=$(wc -l <"$todo")
    step "loom suite on $n mutant(s) the native tests missed (${loom_timeout}s limit each)"
    rm -rf "$loom_logs"
    mkdir -p "$loom_logs"
    : >"$loom_results"
    i=0
    while IFS=$'\t' read -r -u 3 kind file diff name; do
        i=$((i + 1))
        log="$loom_logs/$(basename "$diff" .diff).log"
        t0=$(date +%s)
        loom_check "$file" "$mutants_out/$diff" "$log"
        t1=$(date +%s)
        printf '[%d/%d] %-13s %4ss  %s%s\n' "$i" "$n" "$verdict" "$((t1 - t0))" "$name" \
            "$([[ $kind == selftest ]] && echo '  (self-test: natively caught)')"
        printf '%s\t%s\t%s\t%s\n' "$kind" "$verdict" "$name" "${log#"$out"/}" >>"$loom_results"
    done 3<"$todo"
fi
loom_end=$(date +%s)

# ---------------------------------------------------------------- step 3
step "summary"
python3 - "$mutants_out/outcomes.json" "$loom_results" "$out/summary.txt" \
    "$((native_end - start))" "$((loom_end - native_end))" <<'PY'
import json, os, sys
from collections import defaultdict

outcomes_path, loom_path, summary_path, t_native, t_loom = sys.argv[1:6]
outcomes = json.load(open(outcomes_path))["outcomes"]
loom, selftest = {}, []
if os.path.exists(loom_path):
    for line in open(loom_path):
        kind, verdict, name, log = line.rstrip("\n").split("\t")
        if kind == "selftest":
            selftest.append((verdict, name, log))
        else:
            loom[name] = (verdict, log)

cols = ["caught", "loom", "missed", "unviable", "timeout", "total"]
rows = defaultdict(lambda: dict.fromkeys(cols, 0))
missed, unknown, timeouts, loom_timeouts = [], [], [], []
for o in outcomes:
    if o["scenario"] == "Baseline":
        continue
    m = o["scenario"]["Mutant"]
    row, s = rows[m["file"]], o["summary"]
    row["total"] += 1
    if s == "CaughtMutant":
        row["caught"] += 1
    elif s == "Unviable":
        row["unviable"] += 1
    elif s == "Timeout":
        row["timeout"] += 1
        timeouts.append(m["name"])
    elif s == "MissedMutant":
        verdict, log = loom.get(m["name"], ("not run", ""))
        if verdict in ("loom-caught", "loom-timeout"):
            row["loom"] += 1
            if verdict == "loom-timeout":
                loom_timeouts.append((m["name"], log))
        else:
            row["missed"] += 1
            missed.append((m["name"], verdict, log))
    else:
        unknown.append((m["name"], s))

def score(r):
    viable = r["total"] - r["unviable"]
    if viable == 0:
        return "-"
    return f'{100 * (r["caught"] + r["loom"] + r["timeout"]) / viable:.1f}%'

total = dict.fromkeys(cols, 0)
for r in rows.values():
    for c in cols:
        total[c] += r[c]
width = max([len("file"), len("TOTAL")] + [len(f) for f in rows])
head = ["caught", "by loom", "missed", "unviable", "timeout", "total", "score"]
lines = [
    "caught: by the native tests; by loom: missed natively, then failed or timed out in",
    "the loom suite; missed: survived both; timeout: native tests timed out;",
    "score = (caught + by loom + timeout) / (total - unviable)",
    "",
    f'{"file":<{width}}  ' + "  ".join(f"{h:>8}" for h in head),
]
def fmt(name, r):
    return f"{name:<{width}}  " + "  ".join(f"{r[c]:>8}" for c in cols) + f"  {score(r):>8}"
for f in sorted(rows):
    lines.append(fmt(f, rows[f]))
lines.append("-" * len(lines[-1]))
lines.append(fmt("TOTAL", total))
lines.append("")
lines.append(f"time: native run {t_native} s, loom step {t_loom} s")
lines.append("")
if missed:
    lines.append(f"still missed ({len(missed)}): kill with a test, or exclude in "
                 ".cargo/mutants.toml with a one-line reason why it is equivalent")
    for name, verdict, log in missed:
        note = {"survived": "", "not run": "  [loom step not run]",
                "loom-unviable": f"  [does not build under --cfg loom: {log}]",
                "patch-failed": f"  [diff did not apply: {log}]"}.get(verdict, f"  [{verdict}]")
        lines.append(f"  {name}{note}")
else:
    lines.append("still missed: none")
if timeouts:
    lines.append(f"native tests timed out ({len(timeouts)}), counted as caught:")
    lines += [f"  {name}" for name in timeouts]
if loom_timeouts:
    lines.append(f"loom suite timed out ({len(loom_timeouts)}), counted as caught by loom:")
    lines += [f"  {name}  ({log})" for name, log in loom_timeouts]
for name, s in unknown:
    lines.append(f"unexpected outcome {s}: {name}")
if selftest:
    lines.append("")
    lines.append(f"self-test (MUTANTS_LOOM_SELFTEST): loom step on {len(selftest)} "
                 "natively caught mutant(s), not counted above")
    for verdict, name, log in selftest:
        lines.append(f"  {verdict:<13} {name}  ({log})")
text = "\n".join(lines) + "\n"
print(text, end="")
with open(summary_path, "w") as f:
    f.write(text)
PY
echo "(written to ${out#"$root"/}/summary.txt)"
