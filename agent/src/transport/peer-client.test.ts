import assert from 'node:assert/strict';
import dns from 'node:dns';
import { once } from 'node:events';
import { type AddressInfo, createServer } from 'node:net';
import { describe, it } from 'node:test';
import { GrpcPeer } from './peer-client.ts';

describe('GrpcPeer', () => {
  it('takes no service config from DNS for a peer named by a host name (no TXT lookup)', async (t) => {
    // grpc-js reads a service config from a target's TXT records unless told not to. One that picks
    // weighted_round_robin with out-of-band load reports makes grpc-js load the ORCA protocol with
    // @grpc/proto-loader, which the bundle (scripts/build.ts) replaces with a stand-in that throws:
    // an uncaught exception, the agent gone, for a TXT record on a name it dials (a seed, a member's
    // advertised address). Peers have no use for a service config.
    const asked: string[] = [];
    t.mock.method(dns.promises, 'resolveTxt', (name: string) => {
      asked.push(name);
      return Promise.resolve([
        [
          'grpc_config=[{"serviceConfig":{"loadBalancingConfig":[{"weighted_round_robin":{"enable_oob_load_report":true}}]}}]',
        ],
      ]);
    });
    // A port nothing listens on: the call fails, after the name was resolved.
    const closed = createServer().listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const { port } = closed.address() as AddressInfo;
    closed.close();
    const peer = new GrpcPeer({
      id: 'named',
      address: `localhost:${port}`,
      flowControlWindow: 65_535,
      timeoutMs: 2_000,
    });
    try {
      await assert.rejects(peer.ping());
    } finally {
      peer.close();
    }
    assert.deepEqual(asked, [], 'TXT records looked up');
  });
});
