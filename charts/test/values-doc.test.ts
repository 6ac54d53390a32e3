import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  chartReadme,
  README_FILE,
  UndocumentedValueError,
  valueEntries,
  valuesTable,
  withValuesTable,
} from '../lib/values-doc.ts';

describe('the values table of the chart README', () => {
  it('is the one values.yaml’s comments make (run `node charts/scripts/values-doc.ts` after changing either)', () => {
    assert.equal(readFileSync(README_FILE, 'utf8'), chartReadme());
  });

  it('makes a row per documented key, a heading per top-level section, and shows @default text', () => {
    const entries = valueEntries(
      [
        '# -- The image.',
        'image:',
        '  # -- Where from.',
        '  repository: edgemesh',
        '  # -- The tag.',
        '  # @default -- the appVersion',
        '  tag: ""',
        '# -- Extra env,',
        '# over two lines.',
        'extraEnv: [{ name: A, value: "x|y" }]',
        '# -- Timing.',
        'timing:',
        '  leaseMs: 1000',
      ].join('\n'),
    );
    assert.deepEqual(
      entries.map((e) => [e.path.join('.'), e.section]),
      [
        ['image', true],
        ['image.repository', false],
        ['image.tag', false],
        ['extraEnv', false],
        ['timing', false],
      ],
    );
    const table = valuesTable(entries);
    assert.match(table, /^### `image`\n\nThe image\.$/m);
    assert.match(table, /^\| `image\.tag` \| the appVersion \| The tag\. \|$/m);
    assert.match(
      table,
      /^\| `extraEnv` \| `\[\{"name":"A","value":"x\\\|y"\}\]` \| Extra env, over two lines\. \|$/m,
    );
    assert.match(table, /^\| `timing` \| `\{"leaseMs":1000\}` \| Timing\. \|$/m);
  });

  it('refuses a key nothing documents, naming it', () => {
    assert.throws(
      () =>
        valueEntries(
          [
            '# -- The image.',
            'image:',
            '  # -- Where from.',
            '  repository: x',
            '  tag: ""',
            'other: 1',
          ].join('\n'),
        ),
      (error: unknown) => error instanceof UndocumentedValueError && error.paths.join() === 'image.tag,other',
    );
  });

  it('replaces only what lies between its markers', () => {
    const readme = (table: string) =>
      `# chart\n<!-- values:start (generated from values.yaml by charts/scripts/values-doc.ts) -->\n\n${table}\n\n<!-- values:end -->\nafter\n`;
    assert.equal(withValuesTable(readme('old'), 'new'), readme('new'));
    assert.throws(() => withValuesTable('no markers', 'x'), /markers/);
  });
});
