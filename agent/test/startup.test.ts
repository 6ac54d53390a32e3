import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));

describe('agent start-up', () => {
  it('stops with exit code 2 and a message naming the field when configuration is invalid', () => {
    const cases: [string[], Record<string, string>, RegExp][] = [
      [[], {}, /invalid configuration: store: /],
      [['--store.dir', '/tmp/x', '--http.port', 'eighty'], {}, /http\.port/],
      [['--store.dir', '/tmp/x'], { EDGEMESH_STORE_MAX_BYTES: 'huge' }, /store\.maxBytes: not a byte size/],
      [['--store.dir', '/tmp/x', '--bogus'], {}, /Unknown option '--bogus'/],
    ];
    for (const [args, env, message] of cases) {
      const r = spawnSync(process.execPath, [MAIN, ...args], {
        env: { PATH: process.env.PATH, ...env },
        encoding: 'utf8',
      });
      assert.equal(r.status, 2, args.join(' '));
      assert.match(r.stderr, message);
    }
  });
});
