import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { settings } from './load.ts';

const DOC = readFileSync(new URL('../../../docs/agent.md', import.meta.url), 'utf8');
/** The cells of every Markdown table row, trimmed. */
const ROWS = DOC.split('\n')
  .filter((line) => line.startsWith('|'))
  .map((line) => line.split('|').map((cell) => cell.trim()));

describe('docs/agent.md', () => {
  it('documents every configuration field with its flag and variable', () => {
    for (const s of settings()) {
      const field = `\`${s.path.join('.')}\``;
      const row = ROWS.find((cells) => cells[1] === field);
      assert.ok(row, `a row for ${field}`);
      assert.equal(row[2], `\`--${s.flag}\``, `${field}: flag`);
      assert.equal(row[3], `\`${s.env}\``, `${field}: variable`);
    }
  });
});
