#!/usr/bin/env python3
"""Put a `citus-ha bench --json` run beside a reference run (bench/reference, same sitting).

Usage: python3 bench/compare.py ours.jsonl reference.jsonl
Prints the Markdown table of BENCHMARKS.md: Wasm, native, Wasm/native, reference,
reference/Wasm. The reference's rows are its `double=stub` figures.
"""
import json
import sys

# Our bench name -> the reference's (bench, case, groups) key.
REF = {
    'validate_config': ('validate_config', 'valid', None),
    'adjust_gucs': ('adjust_postgres_gucs', None, None),
    'slot_filter_match': ('ignore_replication_slot', 'match_move', None),
    'slot_filter_nomatch': ('ignore_replication_slot', 'nomatch_name', None),
    'transition_switchover_1_secondary': ('transition', 'switchover_1_secondary', None),
    'transition_50_secondaries_10_replaced': ('transition', 'replace_10_of_50_secondaries', None),
}
for n in (10, 100, 1000):
    REF[f'heartbeat_steady_{n}'] = ('sync_meta_data', 'steady_state_no_tasks', n)
    REF[f'heartbeat_new_{n}'] = ('sync_meta_data', 'all_groups_new', n)
    REF[f'drain_{n}'] = ('process_tasks', 'drain_all_new', n)


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().startswith('{')]


def fmt(ns):
    if ns is None:
        return ''
    if ns >= 1e6:
        return f'{ns / 1e6:.2f} ms'
    if ns >= 1e3:
        return f'{ns / 1e3:.2f} µs'
    return f'{ns:.0f} ns'


def main():
    ours = load(sys.argv[1])
    ref = {}
    for r in load(sys.argv[2]):
        if r.get('double', 'stub') != 'stub' or 'median_ns' not in r:
            continue
        ref[(r.get('bench'), r.get('case'), r.get('groups'))] = r['median_ns']
    print('| bench | Wasm | native | Wasm/native | reference | reference/Wasm |')
    print('|---|---:|---:|---:|---:|---:|')
    for o in ours:
        name = o.get('bench')
        if name == 'meta':
            continue
        if 'bytes' in o:
            print(f"| {name} | {o['bytes'] / 2**20:.1f} MiB | | | | |")
            continue
        w, n = o.get('wasm_ns'), o.get('native_ns')
        ratio = f'{w / n:.2f}x' if w and n else ''
        k = REF.get(name)
        r = ref.get(k) if k else None
        vs = f'{r / w:.1f}x' if r and w else ''
        extra = ''
        if name == 'event_to_statement':
            extra = f" (p50 {fmt(o.get('p50_ns'))}, p99 {fmt(o.get('p99_ns'))})"
        if name == 'swap':
            extra = (
                f" (load {fmt(o.get('load_ns'))}, export {fmt(o.get('export_ns'))},"
                f" import {fmt(o.get('import_ns'))})"
            )
        print(f'| {name}{extra} | {fmt(w)} | {fmt(n)} | {ratio} | {fmt(r)} | {vs} |')


if __name__ == '__main__':
    main()
