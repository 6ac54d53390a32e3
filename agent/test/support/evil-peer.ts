import { Server, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData } from '@grpc/grpc-js';
import { PIECE_SIZE, peerService } from '../../src/transport/peer-service.ts';
import type { ChunkPiece } from '../../src/transport/piece-codec.ts';
import { testCredentials } from '../../harness/test-ca.ts';
import { peerServerCredentials } from '../../src/security/grpc-credentials.ts';

/**
 * A node of the mesh (a valid certificate from its CA, naming node `evil`: a compromised node, or
 * one whose key was stolen) that speaks the protocol correctly but lies about content, and says it is in zone z-near of
 * region r-near (so an agent there ranks it cheapest): it announces a genuine manifest
 * (copied from an honest agent) and serves chunks from `chunks`, with the chunks at the indexes in
 * `tamper` flipped by one bit.
 */
export async function startEvilPeer(opts: {
  manifest: unknown;
  chunks: Map<string, Buffer>;
  tamper?: (digest: string) => boolean;
  /** Its node id and mesh (default `evil` of mesh `default`). */
  nodeId?: string;
  mesh?: string;
  /** Answers every GetManifest and Replicate with "purged just now", showing no signature. */
  claimPurged?: boolean;
}): Promise<{
  address: string;
  served: () => number;
  /** Answers GetManifest with `manifest` (wire form) from now on, with `chunks` behind it. */
  serve: (manifest: unknown, chunks: Map<string, Buffer>) => void;
  close: () => void;
}> {
  let served = 0;
  const identity = await testCredentials(opts.nodeId ?? 'evil', opts.mesh ? { mesh: opts.mesh } : {});
  const server = new Server();
  server.addService(peerService, {
    getManifest(_call: ServerUnaryCall<unknown, unknown>, cb: sendUnaryData<unknown>) {
      if (opts.claimPurged) return cb(null, { holds: false, holders: [], purgedAtMs: Date.now() });
      cb(null, { manifest: opts.manifest, holds: true, holders: [] });
    },
    replicate(_call: ServerUnaryCall<unknown, unknown>, cb: sendUnaryData<unknown>) {
      cb(null, opts.claimPurged ? { purgedAtMs: Date.now() } : {});
    },
    hold(_call: ServerUnaryCall<unknown, unknown>, cb: sendUnaryData<unknown>) {
      cb(null, {});
    },
    fetchChunks(call: ServerWritableStream<{ digests: Buffer[] }, ChunkPiece>) {
      for (const [index, raw] of call.request.digests.entries()) {
        const digest = Buffer.from(raw).toString('hex');
        const data = Buffer.from(opts.chunks.get(digest)!);
        if (opts.tamper?.(digest)) data[data.length >> 1]! ^= 1;
        for (let o = 0; o < data.length; o += PIECE_SIZE)
          call.write({ index, data: data.subarray(o, o + PIECE_SIZE) });
        served++;
      }
      call.end();
    },
    ping(_call: ServerUnaryCall<unknown, unknown>, cb: sendUnaryData<unknown>) {
      cb(null, { nodeId: opts.nodeId ?? 'evil', zone: 'z-near', region: 'r-near', sentAtMs: 0 });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', peerServerCredentials(identity), (e, p) => (e ? reject(e) : resolve(p))),
  );
  return {
    address: `127.0.0.1:${port}`,
    served: () => served,
    serve: (manifest, chunks) => {
      opts.manifest = manifest;
      opts.chunks = chunks;
    },
    close: () => {
      server.forceShutdown();
      identity.close();
    },
  };
}
