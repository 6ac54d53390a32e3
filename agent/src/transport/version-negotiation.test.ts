import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  credentials,
  Metadata,
  makeGenericClientConstructor,
  type Server,
  ServerCredentials,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import fc from 'fast-check';
import { fuzzSetting } from '../../harness/fuzz.ts';
import { compareVersions, parseRange, PROTOCOL_METADATA, type ProtocolRange } from '@edgemesh/contracts';
import { Counters } from '../telemetry/counters.ts';
import { createLogger } from '../telemetry/logger.ts';
import { GrpcPeer } from './peer-client.ts';
import { bindPeerServer, createPeerServer } from './peer-server.ts';
import { peerService } from './peer-service.ts';
import { IncompatiblePeerError } from './peer-transport.ts';

const range = (text: string): ProtocolRange => parseRange(text)!;

/** A Ping by a bare grpc-js client with `metadata` as given (or none); the call's error. */
async function rawPing(port: number, metadata = new Metadata()): Promise<ServiceError | null> {
  const Client = makeGenericClientConstructor(peerService, 'Peer');
  const raw = new Client(`127.0.0.1:${port}`, credentials.createInsecure()) as unknown as {
    Ping(req: unknown, md: Metadata, cb: (e: ServiceError | null) => void): void;
    close(): void;
  };
  try {
    return await new Promise((resolve) => raw.Ping({ sentAtMs: 0 }, metadata, resolve));
  } finally {
    raw.close();
  }
}

/**
 * Two ends of the peer service, each told which protocol range it speaks: a real gRPC server on
 * port 0 and GrpcPeer clients (plaintext: what is tested here is the version handshake).
 */
describe('protocol version negotiation between peers', () => {
  let server: Server;
  let port: number;
  const serverCounters = new Counters();
  const clients: GrpcPeer[] = [];

  const clientSpeaking = (text: string, onIncompatible?: (e: IncompatiblePeerError) => void) => {
    const client = new GrpcPeer({
      id: 'srv',
      address: `127.0.0.1:${port}`,
      flowControlWindow: 1 << 20,
      timeoutMs: 2000,
      protocol: range(text),
      ...(onIncompatible ? { onIncompatible } : {}),
    });
    clients.push(client);
    return client;
  };

  before(async () => {
    server = createPeerServer({
      store: undefined as never,
      counters: serverCounters,
      node: { id: 'srv', zone: 'z', region: 'r' },
      logger: createLogger({ level: 'silent', nodeId: 'srv' }),
      flowControlWindow: 1 << 20,
      protocol: range('1.1-1.3'),
    });
    port = await bindPeerServer(server, '127.0.0.1', 0, ServerCredentials.createInsecure());
  });
  after(() => {
    for (const c of clients) c.close();
    server.forceShutdown();
  });

  it('agrees on the highest version both speak, one minor apart either way', async () => {
    const older = clientSpeaking('1.0-1.2');
    const answer = await older.ping();
    assert.deepEqual(answer.protocol, range('1.1-1.3'));
    assert.deepEqual(older.protocol(), { version: { major: 1, minor: 2 } });
    const newer = clientSpeaking('1.3-1.4');
    await newer.ping();
    assert.deepEqual(newer.protocol(), { version: { major: 1, minor: 3 } });
  });

  it('refuses a caller with no version in common: FAILED_PRECONDITION with its range, counted', async () => {
    const refusedBefore = serverCounters.peersRefused.get('protocol') ?? 0;
    const heard: IncompatiblePeerError[] = [];
    const other = clientSpeaking('2.0-2.1', (e) => heard.push(e));
    await assert.rejects(other.ping(), (error: Error) => {
      assert.ok(error instanceof IncompatiblePeerError);
      assert.equal(error.theirs, '1.1-1.3');
      assert.match(error.message, /speaks 1\.1-1\.3, this node 2\.0-2\.1: no version in common/);
      return true;
    });
    // Every call is checked, not only pings: the server never runs the handler.
    await assert.rejects(other.getManifest('k'), IncompatiblePeerError);
    assert.equal(heard.length, 2);
    assert.match(other.protocol().refused!, /no version in common/);
    assert.equal(serverCounters.peersRefused.get('protocol'), refusedBefore + 2);
  });

  it('refuses a caller whose range is too old, and one whose range it cannot read', async () => {
    await assert.rejects(clientSpeaking('1.0-1.0').ping(), IncompatiblePeerError);
    const metadata = new Metadata();
    metadata.set(PROTOCOL_METADATA, 'one point oh');
    const error = await rawPing(port, metadata);
    assert.equal(error?.code, status.FAILED_PRECONDITION);
    assert.deepEqual(error?.metadata.get(PROTOCOL_METADATA), ['1.1-1.3']);
  });

  it('takes a peer that advertises nothing as 1.0 (a build from before versions)', async () => {
    // No metadata: 1.0, which this server (1.1-1.3) no longer speaks.
    const error = await rawPing(port);
    assert.equal(error?.code, status.FAILED_PRECONDITION);
    assert.match(error.details, /the caller speaks nothing \(taken as 1\.0\), this node 1\.1-1\.3/);
  });

  it('answers any advertised range a caller may send with OK or FAILED_PRECONDITION, never anything else', async () => {
    const said = fc.oneof(
      fc.string({ maxLength: 100 }),
      fc.stringMatching(/^\d{1,5}\.\d{1,5}-\d{1,5}\.\d{1,5}$/),
      fc.constantFrom('1.1', '1.3-9.9', '0.0-1.1', '1.2-1.1', '-', '1.1-'),
    );
    const cases = fc.sample(said, {
      seed: fuzzSetting('FUZZ_SEED', 20261130),
      numRuns: fuzzSetting('FUZZ_RUNS', 300, 1),
    });
    for (const text of cases) {
      const metadata = new Metadata();
      try {
        metadata.set(PROTOCOL_METADATA, text);
      } catch {
        continue; // not a legal header value: grpc-js would not send it
      }
      const error = await rawPing(port, metadata);
      const r = parseRange(text);
      const fits =
        r !== undefined &&
        compareVersions(r.max, { major: 1, minor: 1 }) >= 0 &&
        compareVersions(r.min, { major: 1, minor: 3 }) <= 0;
      assert.equal(
        error?.code ?? status.OK,
        fits ? status.OK : status.FAILED_PRECONDITION,
        JSON.stringify(text),
      );
    }
  });
});
