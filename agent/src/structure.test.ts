import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/**
 * The shape of agent/src: its folders (and the files at its top, each a unit of its own) import one
 * another without cycles, so each can be read, tested and changed knowing only those below it.
 * Shared plain types live in domain.ts, a leaf.
 */

const SRC = dirname(fileURLToPath(import.meta.url));

/** The non-test .ts files of agent/src, as paths relative to it ('/'-separated). */
function sources(dir = SRC): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sources(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')
      ? [relative(SRC, path).split(sep).join('/')]
      : [];
  });
}

/** The files of agent/src that `file` imports (static, type-only, re-exports and dynamic imports). */
function importsOf(file: string): string[] {
  const text = readFileSync(join(SRC, file), 'utf8');
  return ts
    .preProcessFile(text, true, true)
    .importedFiles.map((i) => i.fileName)
    .filter((name) => name.startsWith('.'))
    .map((name) =>
      relative(SRC, resolve(SRC, dirname(file), name))
        .split(sep)
        .join('/'),
    )
    .filter((path) => !path.startsWith('..'));
}

/** A file's unit: its top folder under agent/src, or the file itself when it sits at the top. */
const unitOf = (file: string) => file.split('/')[0]!;

/** Unit -> the units it imports, each with one file-to-file import that shows it. */
function unitEdges(): Map<string, Map<string, string>> {
  const edges = new Map<string, Map<string, string>>();
  for (const file of sources()) {
    const from = unitOf(file);
    const out = edges.get(from) ?? new Map<string, string>();
    edges.set(from, out);
    for (const target of importsOf(file)) {
      const to = unitOf(target);
      if (to !== from && !out.has(to)) out.set(to, `${file} -> ${target}`);
    }
  }
  return edges;
}

/** Groups of units that all reach one another (strongly connected, Tarjan), of two or more. */
function groupsOf(edges: Map<string, Map<string, string>>): Set<string>[] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const groups: Set<string>[] = [];
  const visit = (unit: string) => {
    index.set(unit, index.size);
    low.set(unit, index.get(unit)!);
    stack.push(unit);
    onStack.add(unit);
    for (const next of edges.get(unit)?.keys() ?? []) {
      if (!index.has(next)) {
        visit(next);
        low.set(unit, Math.min(low.get(unit)!, low.get(next)!));
      } else if (onStack.has(next)) low.set(unit, Math.min(low.get(unit)!, index.get(next)!));
    }
    if (low.get(unit) === index.get(unit)) {
      const group = new Set<string>();
      let member: string;
      do {
        member = stack.pop()!;
        onStack.delete(member);
        group.add(member);
      } while (member !== unit);
      if (group.size > 1) groups.push(group);
    }
  };
  for (const unit of [...edges.keys()].sort()) if (!index.has(unit)) visit(unit);
  return groups;
}

/** The shortest way from `start` back to itself within `group`, as units start -> ... -> start. */
function shortestCycle(edges: Map<string, Map<string, string>>, group: Set<string>, start: string): string[] {
  const previous = new Map<string, string>();
  const queue = [start];
  while (queue.length > 0 && !previous.has(start)) {
    const unit = queue.shift()!;
    for (const next of [...(edges.get(unit)?.keys() ?? [])].sort()) {
      if (!group.has(next) || previous.has(next)) continue;
      previous.set(next, unit);
      queue.push(next);
    }
  }
  const between: string[] = [];
  for (let unit = previous.get(start)!; unit !== start; unit = previous.get(unit)!) between.unshift(unit);
  return [start, ...between, start];
}

/**
 * The import cycles between units, each as units a -> ... -> a starting at its first unit by name:
 * every two units that import each other, and the shortest cycle through each unit in a cycle.
 */
function cyclesOf(edges: Map<string, Map<string, string>>): string[][] {
  const cycles = new Map<string, string[]>();
  const add = (cycle: string[]) => {
    const ring = cycle.slice(0, -1);
    const first = ring.indexOf([...ring].sort()[0]!);
    const turned = [...ring.slice(first), ...ring.slice(0, first)];
    cycles.set(turned.join(' '), [...turned, turned[0]!]);
  };
  for (const group of groupsOf(edges)) {
    for (const a of group)
      for (const b of edges.get(a)?.keys() ?? []) if (edges.get(b)?.has(a)) add([a, b, a]);
    for (const unit of group) add(shortestCycle(edges, group, unit));
  }
  return [...cycles.keys()].sort().map((key) => cycles.get(key)!);
}

describe('agent/src structure', () => {
  const edges = unitEdges();

  it('has no import cycle between its folders', () => {
    const cycles = cyclesOf(edges).map(
      (cycle) =>
        `${cycle.join(' -> ')}\n${cycle
          .slice(1)
          .map((to, i) => `    ${edges.get(cycle[i]!)!.get(to)}`)
          .join('\n')}`,
    );
    assert.deepEqual(cycles, [], `folders that import each other:\n  ${cycles.join('\n  ')}`);
  });

  it('keeps domain.ts a leaf: it imports nothing from agent/src', () => {
    assert.deepEqual(importsOf('domain.ts'), []);
  });

  it('keeps the transport to carrying bytes: it imports no fetch, overlay, exchange or http', () => {
    const above = ['fetch', 'overlay', 'exchange', 'http'];
    const wrong = [...(edges.get('transport') ?? [])].filter(([to]) => above.includes(to)).map(([, e]) => e);
    assert.deepEqual(wrong, []);
  });

  it('finds a cycle when there is one, naming it', () => {
    const edge = (pairs: [string, string][]) =>
      new Map(pairs.map(([from, to]) => [from, new Map(to.split(',').map((t) => [t, `${from} -> ${t}`]))]));
    assert.deepEqual(cyclesOf(edge([['a', 'b']])), []);
    assert.deepEqual(
      cyclesOf(
        edge([
          ['a', 'b'],
          ['b', 'c'],
          ['c', 'a,d'],
          ['d', 'e'],
          ['e', 'd'],
        ]),
      ),
      [
        ['a', 'b', 'c', 'a'],
        ['d', 'e', 'd'],
      ],
    );
  });
});
