import { readFileSync } from 'node:fs';
import { isMap, isScalar, parseDocument, type YAMLMap } from 'yaml';

export const VALUES_FILE = new URL('../edgemesh/values.yaml', import.meta.url);
export const README_FILE = new URL('../edgemesh/README.md', import.meta.url);

/** One documented key of values.yaml: a `# -- description` comment right above it. */
export type ValueEntry = {
  path: string[];
  description: string;
  /** The default as parsed (`# @default -- text` replaces how it is shown, not the value). */
  value: unknown;
  defaultText?: string;
  /** A key whose value is a map with documented keys of its own: a heading, not a row. */
  section: boolean;
};

/** A key with no `# --` comment, outside every documented key's value: nothing would show it. */
export class UndocumentedValueError extends Error {
  readonly paths: string[];
  constructor(paths: string[]) {
    super(`values.yaml keys without a "# --" comment: ${paths.join(', ')}`);
    this.name = 'UndocumentedValueError';
    this.paths = paths;
  }
}

const START = '<!-- values:start (generated from values.yaml by charts/scripts/values-doc.ts) -->';
const END = '<!-- values:end -->';

/** The `-- ...` paragraph of a comment block (lines as the yaml package gives them, without `#`). */
function parseComment(
  comment: string | null | undefined,
): { description: string; defaultText?: string } | undefined {
  // A blank line ends a paragraph: only the one touching the key documents it.
  const paragraph = (comment ?? '').split(/\n\s*\n/).at(-1)!;
  const lines = paragraph.split('\n').map((l) => l.replace(/^ /, ''));
  const first = lines.findIndex((l) => l.startsWith('-- '));
  if (first < 0) return undefined;
  const description: string[] = [];
  let defaultText: string | undefined;
  for (const line of lines.slice(first)) {
    const custom = /^@default -- (.*)$/.exec(line);
    if (custom) defaultText = custom[1]!.trim();
    else description.push(line.replace(/^-- /, '').trim());
  }
  return { description: description.join(' ').trim(), ...(defaultText ? { defaultText } : {}) };
}

function walk(map: YAMLMap, path: string[], entries: ValueEntry[], undocumented: string[]): void {
  map.items.forEach((pair, i) => {
    const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
    const here = [...path, key];
    // The yaml package gives the comment above a map's first key to the map itself.
    const comment =
      (isScalar(pair.key) ? pair.key.commentBefore : undefined) ?? (i === 0 ? map.commentBefore : undefined);
    const doc = parseComment(comment);
    const nested: ValueEntry[] = [];
    const nestedUndocumented: string[] = [];
    if (isMap(pair.value)) walk(pair.value, here, nested, nestedUndocumented);
    const section = nested.length > 0;
    if (doc) {
      const value: unknown = (pair.value as { toJSON?: () => unknown } | null)?.toJSON?.() ?? null;
      entries.push({ path: here, ...doc, value, section });
    } else if (!section) undocumented.push(here.join('.'));
    if (section) {
      entries.push(...nested);
      undocumented.push(...nestedUndocumented);
    }
  });
}

/**
 * The documented keys of a values file, in file order. A map whose keys carry `# --` comments is a
 * section (each of its keys must then be documented); any other documented key is one row whose
 * default is its whole value. Throws UndocumentedValueError naming every key no row would show.
 */
export function valueEntries(valuesYaml: string): ValueEntry[] {
  const doc = parseDocument(valuesYaml);
  if (!isMap(doc.contents)) throw new Error('values.yaml is not a map');
  const entries: ValueEntry[] = [];
  const undocumented: string[] = [];
  walk(doc.contents, [], entries, undocumented);
  if (undocumented.length > 0) throw new UndocumentedValueError(undocumented);
  return entries;
}

const cell = (text: string) => text.replace(/\|/g, '\\|');
const shown = (e: ValueEntry) => e.defaultText ?? `\`${cell(JSON.stringify(e.value))}\``;

/** The values table: one heading per top-level section, one row per documented key. */
export function valuesTable(entries: readonly ValueEntry[]): string {
  const out: string[] = [];
  let table = false;
  for (const e of entries) {
    if (e.path.length === 1 && e.section) {
      out.push('', `### \`${e.path[0]}\``, '', e.description, '');
      table = false;
      continue;
    }
    if (!table) out.push('| key | default | description |', '|---|---|---|');
    table = true;
    out.push(`| \`${e.path.join('.')}\` | ${e.section ? '' : shown(e)} | ${cell(e.description)} |`);
  }
  return out.join('\n').trim();
}

/** README with the part between the values markers replaced by `table`. */
export function withValuesTable(readme: string, table: string): string {
  const start = readme.indexOf(START);
  const end = readme.indexOf(END);
  if (start < 0 || end < start) throw new Error(`README.md lacks the markers ${START} ... ${END}`);
  return `${readme.slice(0, start + START.length)}\n\n${table}\n\n${readme.slice(end)}`;
}

/** The chart's README as it should be: the one on disk with the table made from values.yaml. */
export function chartReadme(): string {
  const table = valuesTable(valueEntries(readFileSync(VALUES_FILE, 'utf8')));
  return withValuesTable(readFileSync(README_FILE, 'utf8'), table);
}
