import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseDocument } from './document.ts';

describe('a configuration document (parseDocument)', () => {
  it('reads JSON as JSON and anything else as YAML', async () => {
    assert.deepEqual(await parseDocument('{"mesh": "m", "peers": ["a:1"]}\n'), { mesh: 'm', peers: ['a:1'] });
    assert.deepEqual(await parseDocument('  [1, 2]'), [1, 2]);
    assert.deepEqual(await parseDocument('mesh: m\npeers:\n  - a:1\n'), { mesh: 'm', peers: ['a:1'] });
    // A YAML flow mapping starts like JSON but is not: YAML reads it.
    assert.deepEqual(await parseDocument('{ mesh: m, weight: 2 }'), { mesh: 'm', weight: 2 });
    assert.equal(await parseDocument(''), null);
  });

  it('refuses what is neither, with YAML’s account of what is wrong', async () => {
    await assert.rejects(parseDocument('{"mesh": "m",'), /flow map|Missing|Expected/i);
    await assert.rejects(parseDocument('a: 1\na: 2\n'), /unique/i);
    await assert.rejects(parseDocument('key: [unclosed'), /flow sequence|Missing|Expected/i);
  });
});
