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

  it('reads a JSON document with JSON.parse, not YAML: a key given twice takes its last value', async () => {
    // YAML refuses a repeated key (below), so these hold only if JSON is read as JSON: what keeps the
    // YAML parser out of an agent the operator configures.
    assert.deepEqual(await parseDocument('{"mesh": "a", "mesh": "b"}'), { mesh: 'b' });
    // After a byte order mark too, which JSON.parse alone refuses.
    assert.deepEqual(await parseDocument('\uFEFF{"mesh": "a", "mesh": "b"}\n'), { mesh: 'b' });
    // A BOM before YAML is YAML's to skip.
    assert.deepEqual(await parseDocument('\uFEFFmesh: m\n'), { mesh: 'm' });
  });

  it('refuses what is neither, with YAML’s account of what is wrong', async () => {
    await assert.rejects(parseDocument('{"mesh": "m",'), /flow map|Missing|Expected/i);
    await assert.rejects(parseDocument('a: 1\na: 2\n'), /unique/i);
    await assert.rejects(parseDocument('key: [unclosed'), /flow sequence|Missing|Expected/i);
  });
});
