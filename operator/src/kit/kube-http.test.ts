import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import { KubeHttp } from './kube-http.ts';

describe('KubeHttp', () => {
  it('gives up a request the API server never answers, or whose body never ends', async () => {
    const server = createServer((req, res) => {
      if (req.url === '/slow-body') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"a":'); // and nothing more
      } // otherwise: no answer at all
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [
        {
          name: 'c',
          server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
          skipTLSVerify: true,
        },
      ],
      users: [{ name: 'u' }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
    const http = new KubeHttp(kc, { timeoutMs: 200 });
    try {
      await assert.rejects(http.request('PATCH', '/hang', {}), /PATCH \/hang: no answer within 200 ms/);
      await assert.rejects(http.request('GET', '/slow-body'), /GET \/slow-body: no answer within 200 ms/);
    } finally {
      await http.close();
      server.closeAllConnections();
      server.close();
    }
  });
});
