import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import type { KubeApiError } from './kube-http.ts';
import { KubeHttp } from './kube-http.ts';

/**
 * Runs `use` with a KubeHttp (made with `opts`) pointed at a local server answering with `handler`,
 * under `base` (a proxy's path); closes both after.
 */
async function against(
  handler: RequestListener,
  use: (http: KubeHttp, server: Server) => Promise<void>,
  { base = '', ...opts }: { base?: string; timeoutMs?: number; maxAnswerBytes?: number } = {},
): Promise<void> {
  const server = createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [
      {
        name: 'c',
        server: `http://127.0.0.1:${(server.address() as AddressInfo).port}${base}`,
        skipTLSVerify: true,
      },
    ],
    users: [{ name: 'u' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  const http = new KubeHttp(kc, opts);
  try {
    await use(http, server);
  } finally {
    await http.close();
    server.closeAllConnections();
    server.close();
  }
}

describe('KubeHttp', () => {
  it('asks a server under a path (a proxy’s) below that path, and throws KubeApiError for any answer but 2xx', async () => {
    const seen: string[] = [];
    await against(
      (req, res) => {
        seen.push(req.url ?? '');
        if (req.url?.endsWith('/moved')) return void res.writeHead(302, { location: '/elsewhere' }).end();
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
      },
      async (http) => {
        assert.deepEqual(await http.request('GET', '/api/v1/nodes?limit=1'), { ok: true });
        await assert.rejects(http.request('GET', '/moved'), (e: KubeApiError) => e.code === 302);
        assert.deepEqual(seen, ['/k8s/clusters/x/api/v1/nodes?limit=1', '/k8s/clusters/x/moved']);
      },
      { base: '/k8s/clusters/x/' },
    );
  });

  it('gives up a request the API server never answers, or whose body never ends', async () => {
    await against(
      (req, res) => {
        if (req.url === '/slow-body') {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.write('{"a":'); // and nothing more
        } // otherwise: no answer at all
      },
      async (http) => {
        await assert.rejects(http.request('PATCH', '/hang', {}), /PATCH \/hang: no answer within 200 ms/);
        await assert.rejects(http.request('GET', '/slow-body'), /GET \/slow-body: no answer within 200 ms/);
      },
      { timeoutMs: 200 },
    );
  });

  it('refuses an answer larger than its cap, whether its length is said or not, and goes on', async () => {
    await against(
      (req, res) => {
        if (req.url === '/small') return void res.writeHead(200).end('{"ok":true}');
        const chunked = req.url === '/chunked';
        res.writeHead(200, chunked ? {} : { 'content-length': 4096 });
        res.end(`"${'x'.repeat(4094)}"`);
      },
      async (http) => {
        for (const path of ['/said', '/chunked']) {
          await assert.rejects(http.request('GET', path), /the answer is larger than 1024 bytes/, path);
          // send reads no answer of a success: one past the cap is let go, not an error.
          await http.send('PATCH', path, {});
        }
        assert.deepEqual(await http.request('GET', '/small'), { ok: true });
      },
      { maxAnswerBytes: 1024 },
    );
  });

  it('send lets a 2xx answer go unread on the same connection, and reads a failure for its message', async () => {
    let connections = 0;
    await against(
      (req, res) => {
        if (req.url === '/gone')
          return void res.writeHead(404).end('{"kind":"Status","message":"secrets \\"x\\" not found"}');
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify({ big: 'x'.repeat(100_000) }));
      },
      async (http, server) => {
        server.on('connection', () => connections++);
        for (let i = 0; i < 3; i++) assert.equal(await http.send('PATCH', '/applied', { a: i }), undefined);
        await assert.rejects(
          http.send('DELETE', '/gone'),
          (e: KubeApiError) => e.code === 404 && /secrets "x" not found/.test(e.message),
        );
        assert.equal((await http.request<{ big: string }>('GET', '/read')).big.length, 100_000);
        assert.ok(
          connections <= 2,
          `kept connections, each answer read to its end (${connections} for 5 requests)`,
        );
      },
    );
  });
});
