import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { settings } from './load.ts';

const DOC = readFileSync(new URL('../../../docs/agent.md', import.meta.url), 'utf8');

describe('docs/agent.md', () => {
  it('documents every configuration field with its flag and variable', () => {
    for (const s of settings()) {
      const row = DOC.split('\n').find((line) => line.startsWith(`| \`${s.path.join('.')}\` |`));
      assert.ok(row, `a row for ${s.path.join('.')}`);
      assert.ok(row.includes(`\`--${s.flag}\``), `${s.path.join('.')}: flag --${s.flag}`);
      assert.ok(row.includes(`\`${s.env}\``), `${s.path.join('.')}: variable ${s.env}`);
    }
  });
});
