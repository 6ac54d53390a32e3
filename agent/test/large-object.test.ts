import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type AgentProcess, startAgentProcess } from '../harness/agent-process.ts';

const MiB = 2 ** 20;
const SIZE = 2 * 1024 * MiB; // 2 GiB
/** The agent's RSS must stay under this while moving 2 GiB (its hot tier is 32 MiB). */
const RSS_CEILING = 320 * MiB;

/** 2 GiB of distinct content (no two chunks alike), generated as it is sent. */
function* content(): Generator<Buffer> {
  const block = randomBytes(MiB);
  for (let i = 0; i < SIZE / MiB; i++) {
    block.writeUInt32BE(i, 0);
    yield block;
  }
}

function put(url: string, hash: ReturnType<typeof createHash>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'PUT', headers: { 'Content-Length': String(SIZE) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
    const blocks = content();
    const pump = () => {
      for (;;) {
        const next = blocks.next();
        if (next.done) return req.end();
        hash.update(next.value);
        if (!req.write(next.value)) return req.once('drain', pump);
      }
    };
    pump();
  });
}

function get(url: string): Promise<{ status: number; bytes: number; digest: string }> {
  return new Promise((resolve, reject) => {
    request(url, (res) => {
      const hash = createHash('sha256');
      let bytes = 0;
      res.on('data', (d: Buffer) => {
        bytes += d.length;
        hash.update(d);
      });
      res.on('end', () => resolve({ status: res.statusCode!, bytes, digest: hash.digest('hex') }));
      res.on('error', reject);
    })
      .on('error', reject)
      .end();
  });
}

describe('a 2 GiB object', () => {
  let dir: string;
  let agent: AgentProcess;
  let peak = 0;
  let sampler: NodeJS.Timeout;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'edgemesh-large-'));
    agent = await startAgentProcess([
      '--store.dir',
      dir,
      '--store.max-bytes',
      '3Gi',
      '--store.max-object-bytes',
      '3Gi',
      '--store.memory-bytes',
      '32Mi',
    ]);
    const sample = async () => {
      const status = await agent.status().catch(() => undefined);
      peak = Math.max(peak, status?.process.rssBytes ?? 0);
    };
    sampler = setInterval(() => void sample(), 100);
  });
  after(async () => {
    clearInterval(sampler);
    await agent?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("streams in and out whole and byte-identical, with the agent's memory bounded", async () => {
    const sent = createHash('sha256');
    assert.equal(await put(`${agent.url}/v1/objects/big/2g.bin`, sent), 201);
    const got = await get(`${agent.url}/v1/objects/big/2g.bin`);
    assert.equal(got.status, 200);
    assert.equal(got.bytes, SIZE);
    assert.equal(got.digest, sent.digest('hex'));
    const status = await agent.status();
    peak = Math.max(peak, status.process.rssBytes);
    console.log(`# 2 GiB PUT+GET: agent peak RSS ${(peak / MiB).toFixed(0)} MiB`);
    assert.ok(
      peak < RSS_CEILING,
      `peak RSS ${(peak / MiB).toFixed(0)} MiB stays under ${RSS_CEILING / MiB} MiB`,
    );
  });
});
