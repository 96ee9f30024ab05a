#!/usr/bin/env python3
"""Turns one run of the benches into the ratio table of the README.

Reads criterion's estimates (median of each benchmark) from target/criterion
and the RESULT lines printed by the custom wakeup and contention harnesses
(from the log files given on the command line), and prints the hot-path
ratios to the floor and to each peer, the wake-up medians and p99s against
the Parker round trip, and the contention rates against no writer, each
with its target (the crate's budgets, docs/BENCHMARKS.md) and whether this run met it.
"""
import json
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion"


def medians(group):
    out = {}
    for bench in (root / group).glob("*/new/benchmark.json"):
        meta = json.loads(bench.read_text())
        est = json.loads((bench.parent / "estimates.json").read_text())
        out[meta["function_id"]] = est["median"]["point_estimate"]
    return out


def results(kind, logs):
    rows = {}
    for log in logs:
        for line in pathlib.Path(log).read_text().splitlines():
            parts = line.split("\t")
            if parts[0] == f"RESULT {kind}":
                rows[parts[1]] = [float(x) for x in parts[2:]]
    return rows


def verdict(ok):
    return "met" if ok else "MISSED"


# hot_check benches time a batch of 16 back-to-back checks (benches/hot_path.rs).
BATCH = 16
hot = {name: ns / BATCH for name, ns in medians("hot_check").items()}
floor = hot["floor: AtomicBool::load(Relaxed)"]
ours = hot["sqlkiller: handle_signal"]
probe = hot["sqlkiller: handle_signal, probe installed"]
deadline = hot["sqlkiller: handle_signal, deadline armed"]
token = hot["tokio-util: CancellationToken::is_cancelled"]
mutex = hot["TiDB master model: check under the mutex"]
clock = hot["TiDB probe model: clock read every call"]

print("### Hot check, not killed: batched (criterion medians per check, in runs of 16)\n")
print("| benchmark | median | vs floor |")
print("| --- | ---: | ---: |")
for name, value in sorted(hot.items(), key=lambda kv: kv[1]):
    print(f"| {name} | {value:.2f} ns | {value / floor:.2f}x |")
print()
print("| target | this run | |")
print("| --- | ---: | --- |")
print(f"| handle_signal <= 1.2x floor | {ours / floor:.2f}x | {verdict(ours / floor <= 1.2)} |")
print(f"| with a probe <= 1.5x floor | {probe / floor:.2f}x | {verdict(probe / floor <= 1.5)} |")
print(f"| with a deadline <= 1.5x floor | {deadline / floor:.2f}x | {verdict(deadline / floor <= 1.5)} |")
print(f"| vs CancellationToken::is_cancelled | {token / ours:.1f}x faster | |")
print(f"| vs the TiDB-master mutex model | {mutex / ours:.1f}x faster | |")
print(f"| with a probe vs TiDB's clock-every-call | {clock / probe:.1f}x faster | |")

cycle = medians("kill_reset")
print("\n### Kill and reset (criterion medians)\n")
print("| benchmark | median |")
print("| --- | ---: |")
for name, value in sorted(cycle.items(), key=lambda kv: kv[1]):
    print(f"| {name} | {value:.1f} ns |")

logs = sys.argv[1:]
per_call = results("per_call", logs)
if per_call:
    print("\n### Hot check, not killed: one check per row of a scan (median ns per row)\n")
    print("| scan: shape: variant | per row | vs floor | vs same-shape baseline | target | |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, (ns, ratio) in per_call.items():
        same = ""
        if "two hops" in name:
            prefix = name[: name.index("two hops")]
            base = per_call.get(prefix + "two hops: baseline, AtomicBool with a slow path")
            if base and "baseline" not in name:
                same = f"{ns / base[0]:.3f}x"
        if "floor" in name or "baseline" in name:
            target = None
        elif "probe" in name or "deadline" in name:
            target = 1.5
        else:
            target = 1.2
        t = f"<= {target}x" if target else ""
        v = verdict(ratio <= target) if target else ""
        print(f"| {name} | {ns:.3f} ns | {ratio:.3f}x | {same} | {t} | {v} |")

timer = results("timer", logs)
if timer:
    print("\n### Deadlines on the real clock\n")
    print("| measure | median | p99 | max |")
    print("| --- | ---: | ---: | ---: |")
    for name, (median, p99, worst) in timer.items():
        print(f"| {name} | {median:.0f} us | {p99:.0f} us | {worst:.0f} us |")
    ok = all(p99 <= 3000 for _, (_, p99, _) in timer.items())
    print(f"\nTarget: p99 within the slack (3 ms): {verdict(ok)}.")
wake = results("wakeup", logs)
if wake:
    parker = wake["crossbeam Parker: unpark -> park"]
    print("\n### Wake-up round trip (kill -> waiter -> back)\n")
    print("| kind | median | p99 | median vs Parker |")
    print("| --- | ---: | ---: | ---: |")
    for name, (median, p99) in wake.items():
        print(f"| {name} | {median / 1000:.2f} us | {p99 / 1000:.2f} us | {median / parker[0]:.2f}x |")
    ratio = wake["sqlkiller: kill -> KillEvent::wait"][0] / parker[0]
    print(f"\nTarget: median <= 1.2x Parker: {ratio:.2f}x, {verdict(ratio <= 1.2)}.")

cont = results("contention", logs)
if cont:
    print("\n### Owner check rate with a writer on another core\n")
    print("| mode | checks/s | vs no writer |")
    print("| --- | ---: | ---: |")
    for name, (rate, ratio) in cont.items():
        print(f"| {name} | {rate:.3e} | {ratio:.3f}x |")
    ratio = cont["writer on other sessions"][1]
    print(f"\nTarget: other sessions >= 0.9x of no writer: {ratio:.3f}x, {verdict(ratio >= 0.9)}.")
