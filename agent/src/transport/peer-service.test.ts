import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';
import protobuf from 'protobufjs/light.js';
import { peerRoot, peerService, serviceDefinition } from './peer-service.ts';

const SERVICE = 'edgemesh.peer.v1.Peer';
type Method = MethodDefinition<unknown, unknown>;
const method = (service: ServiceDefinition, name: string) => service[name] as Method;

/**
 * The service as the bundle has it: from the descriptor JSON (scripts/build.ts writes it from the
 * parsed .proto), with protobufjs's light build, and without long.js (the bundle leaves it out).
 */
function asInTheBundle<T>(run: (service: ServiceDefinition) => T): T {
  const util = protobuf.util as { Long: unknown };
  const long = util.Long;
  util.Long = null;
  protobuf.configure();
  try {
    const root = protobuf.Root.fromJSON(JSON.parse(JSON.stringify(peerRoot.toJSON())) as protobuf.INamespace);
    root.resolveAll();
    return run(serviceDefinition(root, SERVICE));
  } finally {
    util.Long = long;
    protobuf.configure();
  }
}

/** What handlers and callers are given, as grpc-js's service definitions from proto-loader gave it. */
function checkCodecs(service: ServiceDefinition): void {
  // Every field present, at its default when the sender left it out (the handlers count on it);
  // messages null.
  assert.deepEqual(method(service, 'GetManifest').responseDeserialize(Buffer.alloc(0)), {
    manifest: null,
    holders: [],
    holds: false,
    purgedAtMs: 0,
    inProgress: false,
    purgeSignature: null,
  });
  const ping = method(service, 'Ping').responseDeserialize(Buffer.alloc(0)) as Record<string, unknown>;
  assert.deepEqual(ping, {
    nodeId: '',
    zone: '',
    region: '',
    sentAtMs: 0,
    coordinateVec: [],
    coordinateHeight: 0,
    coordinateError: 0,
    incarnation: 0,
    protocol: '',
    yourIncarnation: 0,
  });
  // 64-bit fields as numbers (a negative one too), bytes as Buffers, names in lowerCamelCase.
  const hold = method(service, 'Hold');
  const manifest = {
    key: 'k',
    size: 2 ** 40 + 3,
    chunkSize: 4 * 2 ** 20,
    chunks: [Buffer.alloc(32, 1), Buffer.alloc(32, 2)],
    root: Buffer.alloc(32, 3),
    createdAtMs: 1_765_000_000_123,
    expiresAtMs: 0,
    contentType: 'text/plain',
    signerCertificate: Buffer.alloc(0),
    signature: Buffer.alloc(0),
  };
  const request = { manifest, holder: { nodeId: 'n', grpc: '10.0.0.1:7481' } };
  const decoded = hold.requestDeserialize(hold.requestSerialize(request)) as typeof request;
  assert.deepEqual(decoded, request);
  for (const bytes of [decoded.manifest.root, ...decoded.manifest.chunks, decoded.manifest.signature])
    assert.ok(Buffer.isBuffer(bytes), 'bytes as a Buffer');
  const purge = method(service, 'Purge');
  const purged = { key: 'k', purgedAtMs: -5, signature: null };
  assert.deepEqual(purge.requestDeserialize(purge.requestSerialize(purged)), purged);
  // What a caller sends that is not a message is refused, not sent as an empty one.
  for (const wrong of [null, undefined, [], 'x', 5])
    assert.throws(() => hold.requestSerialize(wrong), /Failed to serialize/, String(wrong));
  // Handlers and callers may use lowerCamelCase names (peer-server.ts's are), as with proto-loader.
  assert.deepEqual(
    Object.entries(service).map(([name, m]) => [name, m.path, m.originalName]),
    Object.keys(service).map((name) => [
      name,
      `/${SERVICE}/${name}`,
      name.charAt(0).toLowerCase() + name.slice(1),
    ]),
  );
  assert.equal(method(service, 'Watch').responseStream, true);
  assert.equal(method(service, 'Watch').requestStream, false);
}

describe('the peer service’s codecs (peer-service.ts)', () => {
  it('give handlers and callers what grpc-js had from proto-loader: defaults, numbers, Buffers, both names', () => {
    checkCodecs(peerService);
  });

  it('give the same from the descriptor with the light build and without long.js, as in the bundle', () => {
    asInTheBundle(checkCodecs);
    // 64-bit fields as numbers still: the values the agent sends (times, sizes) are all under 2^53.
    asInTheBundle((service) => {
      const ping = method(service, 'Ping');
      const answer = { sentAtMs: 1_765_000_000_123, fromNode: 'n' };
      assert.deepEqual(ping.requestDeserialize(method(peerService, 'Ping').requestSerialize(answer)), answer);
    });
  });
});
