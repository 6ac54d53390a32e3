import assert from 'node:assert/strict';
import { createPrivateKey, sign } from 'node:crypto';
import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { revocationSignedBytes } from '@edgemesh/contracts';
import { createTestCa, testCredentials } from '../../harness/test-ca.ts';
import { createLogger } from '../telemetry/logger.ts';
import { RevocationList } from './revocation-list.ts';
import { Revocations } from './revocations.ts';

describe('revocation lists', () => {
  it('applies only a newer list the mesh CA signed, and keeps it across a restart', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'edgemesh-revocations-'));
    const ca = await createTestCa('default');
    const credentials = await testCredentials('node-a', { ca });
    const signed = (nodes: string[], issuedAtMs: number, key = ca.material.keyPem) => ({
      nodes,
      issuedAtMs,
      signature: sign(
        'sha256',
        revocationSignedBytes('m', nodes, issuedAtMs),
        createPrivateKey(key),
      ).toString('base64'),
    });
    const list = (revocations: Revocations) =>
      new RevocationList({
        credentials,
        revocations,
        mesh: 'm',
        logger: createLogger({ level: 'silent', nodeId: 'a' }),
        now: Date.now,
        stateFile: join(dir, 'revocations.json'),
      });
    try {
      const first = new Revocations();
      const a = list(first);
      await a.start();
      const now = Date.now();
      assert.equal(a.apply(signed(['x'], now - 1000), 'test'), 'applied');
      assert.equal(a.apply(signed([], now - 2000), 'test'), 'stale', 'an older list replayed');
      const stranger = await createTestCa('default');
      assert.equal(a.apply(signed([], now, stranger.material.keyPem), 'test'), 'bad-signature');
      assert.equal(a.apply({ ...signed(['x'], now), nodes: [] }, 'test'), 'bad-signature', 'nodes changed');
      assert.equal(a.apply(signed(['x'], now + 3600_000), 'test'), 'future');
      assert.equal(first.revoked('x'), true);
      await a.saved();
      // A restart: the saved list is applied before anything else, and the old one is stale.
      const second = new Revocations();
      const b = list(second);
      await b.start();
      assert.equal(second.revoked('x'), true, 'still revoked after a restart');
      assert.equal(b.apply(signed([], now - 2000), 'test'), 'stale');
    } finally {
      credentials.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it(
    'applies a list from its file once the trust bundle holds the CA that signed it, though read before',
    { timeout: 20_000 },
    async () => {
      const dir = await mkdtemp(join(tmpdir(), 'edgemesh-revocations-'));
      const ca = await createTestCa('default');
      const credentials = await testCredentials('node-a', { ca });
      const revocations = new Revocations();
      const file = join(dir, 'revoked.json');
      const list = new RevocationList({
        credentials,
        revocations,
        mesh: 'm',
        logger: createLogger({ level: 'silent', nodeId: 'a' }),
        now: Date.now,
        file,
      });
      try {
        // The list comes first, signed by the next CA, which the bundle does not hold yet.
        const next = await createTestCa('default');
        const issuedAtMs = Date.now();
        const signature = sign(
          'sha256',
          revocationSignedBytes('m', ['evil'], issuedAtMs),
          createPrivateKey(next.material.keyPem),
        ).toString('base64');
        await writeFile(file, JSON.stringify({ nodes: ['evil'], issuedAtMs, signature }));
        await list.start(20);
        assert.equal(revocations.revoked('evil'), false, 'not signed by a CA of the bundle yet');
        const revoked = new Promise((resolve) => revocations.onRevoked(resolve));
        await appendFile(ca.certFile, `\n${next.material.certPem}`);
        assert.equal(await credentials.refreshTrust(), true);
        await revoked;
        assert.equal(revocations.revoked('evil'), true);
      } finally {
        list.close();
        credentials.close();
        await rm(dir, { recursive: true, force: true });
      }
    },
  );

  it(
    'reads a list dated ahead of its clock again, says so once, and applies it once the clock gets there',
    { timeout: 20_000 },
    async () => {
      const dir = await mkdtemp(join(tmpdir(), 'edgemesh-revocations-'));
      const ca = await createTestCa('default');
      const credentials = await testCredentials('node-a', { ca });
      const revocations = new Revocations();
      const file = join(dir, 'revoked.json');
      let clock = Date.now();
      const issuedAtMs = clock + 3600_000; // an hour ahead: this clock is behind
      const lines: string[] = [];
      const said = Promise.withResolvers<void>();
      const list = new RevocationList({
        credentials,
        revocations,
        mesh: 'm',
        logger: pino({ level: 'warn' }, { write: (line: string) => void (lines.push(line), said.resolve()) }),
        now: () => clock,
        file,
      });
      try {
        const signature = sign(
          'sha256',
          revocationSignedBytes('m', ['evil'], issuedAtMs),
          createPrivateKey(ca.material.keyPem),
        ).toString('base64');
        await writeFile(file, JSON.stringify({ nodes: ['evil'], issuedAtMs, signature }));
        await list.start(20);
        await said.promise;
        assert.equal(revocations.revoked('evil'), false);
        const revoked = new Promise((resolve) => revocations.onRevoked(resolve));
        clock = issuedAtMs; // the clock put right
        await revoked;
        assert.equal(
          lines.filter((l) => l.includes('dated ahead')).length,
          1,
          'said once, not at every read',
        );
      } finally {
        list.close();
        credentials.close();
        await rm(dir, { recursive: true, force: true });
      }
    },
  );
});
