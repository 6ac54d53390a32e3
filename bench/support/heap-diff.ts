/**
 * Two V8 heap snapshots (`.heapsnapshot`, as `--heapsnapshot-signal` writes them) compared by what
 * the objects are: per constructor (or kind: strings, arrays, closures by function name), how many
 * there are and their own size in each, largest growth first. A snapshot holds only what is still
 * reachable (V8 collects garbage before it writes one), so what grows between two of them, taken
 * some time apart under a steady load, is what the process keeps.
 *
 * Also a command: `node bench/support/heap-diff.ts BEFORE.heapsnapshot AFTER.heapsnapshot [TOP]`.
 */
import { readFile } from 'node:fs/promises';

export interface Group {
  count: number;
  bytes: number;
}

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

/** Counts and own sizes per "kind:name" of one snapshot. */
export async function summarize(path: string): Promise<Map<string, Group>> {
  const snap = JSON.parse(await readFile(path, 'utf8')) as Snapshot;
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const width = fields.length;
  const typeAt = fields.indexOf('type');
  const nameAt = fields.indexOf('name');
  const sizeAt = fields.indexOf('self_size');
  const groups = new Map<string, Group>();
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + typeAt]!]!;
    // Strings are named by their content: one group for all of them, not one per text.
    const name =
      type === 'string' || type === 'concatenated string' || type === 'sliced string'
        ? '(strings)'
        : type === 'number'
          ? '(heap numbers)'
          : snap.strings[snap.nodes[i + nameAt]!]!.slice(0, 80);
    const key = `${type}:${name}`;
    const group = groups.get(key) ?? { count: 0, bytes: 0 };
    group.count++;
    group.bytes += snap.nodes[i + sizeAt]!;
    groups.set(key, group);
  }
  return groups;
}

export interface Growth {
  key: string;
  before: Group;
  after: Group;
}

/** Every group whose own size or count changed, largest growth in bytes first. */
export function diff(before: Map<string, Group>, after: Map<string, Group>): Growth[] {
  const none = { count: 0, bytes: 0 };
  const keys = new Set([...before.keys(), ...after.keys()]);
  return [...keys]
    .map((key) => ({ key, before: before.get(key) ?? none, after: after.get(key) ?? none }))
    .filter((g) => g.before.bytes !== g.after.bytes || g.before.count !== g.after.count)
    .sort((a, b) => b.after.bytes - b.before.bytes - (a.after.bytes - a.before.bytes));
}

const total = (groups: Map<string, Group>) => [...groups.values()].reduce((a, g) => a + g.bytes, 0);

/** A printable table of the `top` largest growths, with the totals. */
export function report(before: Map<string, Group>, after: Map<string, Group>, top = 25): string {
  const kb = (n: number) => (n / 1024).toFixed(0).padStart(8);
  const lines = [
    `# heap in snapshots: ${(total(before) / 1e6).toFixed(1)} MB -> ${(total(after) / 1e6).toFixed(1)} MB`,
    `# ${'growth KiB'.padStart(10)} ${'KiB after'.padStart(9)} ${'count'.padStart(16)}  kind:constructor`,
  ];
  for (const g of diff(before, after).slice(0, top))
    lines.push(
      `# ${kb(g.after.bytes - g.before.bytes)}   ${kb(g.after.bytes)} ${`${g.before.count}->${g.after.count}`.padStart(16)}  ${g.key}`,
    );
  return lines.join('\n');
}

if (import.meta.main) {
  const [a, b, top] = process.argv.slice(2);
  if (!a || !b) {
    process.stderr.write(
      'usage: node bench/support/heap-diff.ts BEFORE.heapsnapshot AFTER.heapsnapshot [TOP]\n',
    );
    process.exit(2);
  }
  console.log(report(await summarize(a), await summarize(b), top ? Number(top) : 25));
}
