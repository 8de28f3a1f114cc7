"""Puts the GPU check's figures side by side: ragjet vs sentence-transformers
throughput ratios, the issue's targets met or not, the OOM back-off's halving
sequence (from ragjet's JSON log), search speed-up. Reads the JSON lines that
st_reference.py and gpu_check wrote."""

import argparse
import json
from pathlib import Path


def read_lines(path: Path) -> list[dict]:
    out = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return out


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--st", required=True, type=Path)
    ap.add_argument("--ragjet", required=True, type=Path)
    ap.add_argument("--log", type=Path, default=None)
    args = ap.parse_args()
    st = read_lines(args.st)
    rj = read_lines(args.ragjet)
    log = read_lines(args.log) if args.log else []

    device = next((r["device"] for r in rj if r.get("check") == "device"), "?")
    gpu = next((s["name"] for s in st if s.get("check") == "st_gpu"), None)
    print(f"device: ragjet {device}" + (f", torch sees {gpu}" if gpu else ""))

    print("\nparity vs the sentence-transformers f32 CPU reference")
    for r in (r for r in rj if r.get("check") == "parity"):
        print(
            f"  {r['precision']:>4}: min cosine {r['min_cosine']:.6f}, "
            f"mean {r['mean_cosine']:.6f}, min centred {r['min_centred_cosine']:.6f}  "
            f"(target >= {r['target']}) {verdict(r['pass'])}"
        )

    print("\nthroughput, passages/s (same GPU, same run)")
    print(f"  {'batch':>5} {'set':>7} {'ragjet':>10} {'ST':>10} {'ratio':>6}  target")
    st_tp = {(s["batch"], s["set"]): s for s in st if s.get("check") == "st_throughput"}
    for r in (r for r in rj if r.get("check") == "throughput"):
        s = st_tp.get((r["batch"], r["set"]))
        ratio = r["passages_per_s"] / s["passages_per_s"] if s else float("nan")
        targets = [f">= 2x ST {verdict(ratio >= 2.0)}"]
        if r["set"] == "short":
            targets.append(f">= 30000/s {verdict(r['passages_per_s'] >= 30000)}")
        st_pps = f"{s['passages_per_s']:10.0f}" if s else f"{'-':>10}"
        print(
            f"  {r['batch']:>5} {r['set']:>7} {r['passages_per_s']:10.0f} {st_pps} "
            f"{ratio:6.2f}  {', '.join(targets)}"
        )
    if st and st[0].get("device") == "cpu" and not gpu:
        print("  (dry run: ST ran in f32 on the CPU; these ratios mean nothing)")

    print("\nOOM back-off")
    # The log's phase markers split the halving warnings between the checks.
    phases: dict[str, list[dict]] = {}
    phase = None
    for e in log:
        if "gpu_check_phase" in e:
            phase = e["gpu_check_phase"]
            phases[phase] = []
        elif phase and "halving" in str(e.get("fields", {}).get("message", "")):
            phases[phase].append(e["fields"])
    for r in (r for r in rj if r.get("check", "").startswith("oom_")):
        if "error" in r:
            print(f"  {r['check']}: FAIL, {r['error']}")
            continue
        steps = phases.get(r["check"], [])
        seq = " -> ".join([str(r["start_limit"])] + [str(h.get("limit")) for h in steps])
        print(
            f"  {r['check']}: {len(steps)} halvings, limit {seq} (final {r['final_limit']}); "
            f"{r['rows_out']}/{r['rows_in']} rows back, "
            f"min cosine vs plain f16 {r['min_cosine_vs_plain_f16']:.6f}  {verdict(r['pass'])}"
        )
        for h in steps:
            print(
                f"    OOM at {h.get('texts')} texts / {h.get('tokens')} tokens -> {h.get('limit')}"
            )

    print("\nexact search, 10 best, cosine")
    cpu = next((r for r in rj if r.get("check") == "search_cpu"), None)
    if cpu:
        print(
            f"  CPU FlatIndex ({cpu['threads']} threads): {cpu['queries_per_s']:.0f} queries/s "
            f"on {cpu['queries']} queries of {cpu['rows']} x {cpu['dim']}"
        )
    for r in (r for r in rj if r.get("check") == "search_device"):
        print(
            f"  {r['device']} {r['storage']}: {r['queries_per_s']:.0f} queries/s on {r['queries']} "
            f"queries = {r['speedup_vs_cpu']:.1f}x CPU; "
            f"recall@10 vs CPU {r['recall_at_10_vs_cpu']:.4f}; built in {r['build_s']:.1f} s"
        )

    for r in (r for r in rj if r.get("check") in ("gpu_memory", "telemetry")):
        if r["check"] == "gpu_memory":
            used, total = r["used_bytes"] / 2**30, r["total_bytes"] / 2**30
            print(f"\nGPU memory: {used:.2f} / {total:.2f} GiB used")
        else:
            print("telemetry: " + ("; ".join(r["lines"]) or "(no GPU gauges exported)"))


if __name__ == "__main__":
    main()
