"""Print ratio tables from a pytest-benchmark JSON file: for every group, each minilrp
implementation's median (the fast path "minilrp", and "minilrp-reference" where measured) and
its ratio to the peer measured in the same run.

    python benchmarks/report.py /tmp/bench.json
"""
import json
import sys


def main(path):
    data = json.load(open(path))
    groups = {}
    for b in data["benchmarks"]:
        impl = (b.get("params") or {}).get("impl", "minilrp")
        groups.setdefault(b["group"], {})[impl] = b["stats"]["median"]
    print(f"machine: {data['machine_info'].get('cpu', {}).get('brand_raw', '?')}, "
          f"{data['datetime']}, python {data['machine_info']['python_version']}")
    print("| benchmark | minilrp | median | peer | peer median | ratio (minilrp / peer) |")
    print("|---|---|---:|---|---:|---:|")
    for group in sorted(groups):
        impls = groups[group]
        mine = {k: v for k, v in sorted(impls.items()) if k.startswith("minilrp")}
        peers = {k: v for k, v in sorted(impls.items()) if not k.startswith("minilrp")} or {"-": None}
        for impl, t_mine in mine.items():
            for peer, t in peers.items():
                ratio = f"{t_mine / t:.2f}" if t else "-"
                print(f"| {group} | {impl} | {fmt(t_mine)} | {peer} | {fmt(t)} | {ratio} |")


def fmt(t):
    if t is None:
        return "-"
    return f"{t * 1e3:.3f} ms" if t < 1 else f"{t:.2f} s"


if __name__ == "__main__":
    main(sys.argv[1])
