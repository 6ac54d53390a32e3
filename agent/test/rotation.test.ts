import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createCa } from '@edgemesh/identity';
import { type AgentProcess, eventually, startAgentProcess } from '../harness/agent-process.ts';

const MiB = 2 ** 20;
const SIZE = 1024 * MiB;

/** Replaces a file at once (readers see the old or the new content, never a part). */
async function replace(file: string, content: string): Promise<void> {
  await writeFile(`${file}.new`, content, { mode: 0o600 });
  await rename(`${file}.new`, file);
}

/**
 * Node certificates that live 10 s (renewed every ~7 s) and a CA rotation (a new CA added to the
 * trust bundle and signing from then on, the old one then removed) while 1 GiB streams from one agent
 * to another at 64 MiB/s: the transfer completes, every byte verified.
 */
describe('certificate and CA rotation in the middle of a 1 GiB transfer', () => {
  let dir: string;
  let a: AgentProcess;
  let b: AgentProcess;
  /** The first CA's certificate (the one rotated out). */
  let oldCa: string;
  const files = () => ({
    cert: join(dir, 'ca.crt'),
    key: join(dir, 'ca.key'),
    bundle: join(dir, 'bundle.crt'),
  });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-rotation-'));
    const old = await createCa({ namespace: 'local', name: 'default' }, new Date(Date.now() - 3600_000));
    await replace(files().cert, old.certPem);
    await replace(files().key, old.keyPem);
    await replace(files().bundle, old.certPem);
    const security = [
      ...['--security.ca.cert-file', files().cert, '--security.ca.key-file', files().key],
      ...['--security.trust-bundle-file', files().bundle, '--security.certificate-ttl-seconds', '10'],
      ...['--transfer.upload-bytes-per-second', String(64 * MiB)],
      ...['--store.max-bytes', '3Gi', '--store.memory-bytes', '0'],
    ];
    a = await startAgentProcess(['--node-id', 'a', '--store.dir', join(dir, 'a'), ...security]);
    b = await startAgentProcess([
      ...['--node-id', 'b', '--store.dir', join(dir, 'b'), ...security],
      ...['--peers', `127.0.0.1:${a.grpcPort}`],
    ]);
    oldCa = old.certPem;
  });
  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await rm(dir, { recursive: true, force: true });
  });

  it('completes the transfer, verified, across renewals and a CA rotation', async () => {
    const sent = createHash('sha256');
    let left = SIZE;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (left === 0) return controller.close();
        const piece = randomBytes(Math.min(4 * MiB, left));
        left -= piece.length;
        sent.update(piece);
        controller.enqueue(piece);
      },
    });
    const put = await fetch(`${a.url}/v1/objects/big.bin`, {
      method: 'PUT',
      body,
      duplex: 'half',
    });
    assert.equal(put.status, 201);
    const digest = sent.digest('hex');

    const got = await fetch(`${b.url}/v1/objects/big.bin`);
    assert.equal(got.status, 200);
    const received = createHash('sha256');
    let bytes = 0;
    let rotated = false;
    let retired = false;
    const next = await createCa({ namespace: 'local', name: 'default' }, new Date(Date.now() - 3600_000));
    for await (const piece of got.body as unknown as AsyncIterable<Uint8Array>) {
      received.update(piece);
      bytes += piece.length;
      if (!rotated && bytes >= SIZE / 4) {
        rotated = true;
        // Both CAs trusted first; from now on the new one signs every renewal.
        await replace(files().bundle, `${oldCa}\n${next.certPem}`);
        await replace(files().cert, next.certPem);
        await replace(files().key, next.keyPem);
      }
      if (rotated && !retired && bytes >= (SIZE * 3) / 4) {
        // By now every certificate was renewed by the new CA (they live 10 s): the old one goes.
        retired = true;
        await replace(files().bundle, next.certPem);
      }
    }
    assert.equal(bytes, SIZE);
    assert.equal(received.digest('hex'), digest, 'every byte as sent');
    const renewals = (agent: AgentProcess) =>
      agent.logs.filter((l) => l.includes('"node certificate renewed"')).length;
    const bundles = (agent: AgentProcess) =>
      agent.logs.filter((l) => l.includes('"trust bundle changed"')).length;
    console.log(
      `# 1 GiB across: renewals a=${renewals(a)} b=${renewals(b)}, trust bundle changes a=${bundles(a)} b=${bundles(b)}`,
    );
    for (const agent of [a, b]) {
      assert.ok(renewals(agent) >= 2, 'certificates renewed during the transfer');
      assert.ok(bundles(agent) >= 1, 'the trust bundle changed during the transfer');
    }
    // After the rotation, new connections run on the new CA alone: a fresh read from a to b works.
    const small = await fetch(`${a.url}/v1/objects/small`, { method: 'PUT', body: 'after the rotation' });
    assert.equal(small.status, 201);
    await eventually(
      async () => {
        const res = await fetch(`${b.url}/v1/objects/small`);
        return res.status === 200 && (await res.text()) === 'after the rotation' ? true : undefined;
      },
      20_000,
      'a read after the rotation',
    );
  });
});
