import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import protobuf from 'protobufjs';
import { PEER_PROTO } from './peer-service.ts';
import { decodePiece, encodePiece } from './piece-codec.ts';

describe('ChunkPiece codec', () => {
  const ChunkPiece = protobuf.loadSync(PEER_PROTO).lookupType('edgemesh.peer.v1.ChunkPiece');

  it('is byte-identical with protobuf encoding of the .proto message', () => {
    for (const [index, size] of [
      [0, 0],
      [1, 10],
      [300, 1024 * 1024],
      [2 ** 31, 5],
    ] as const) {
      const data = randomBytes(size);
      const ours = encodePiece({ index, data });
      const reference = Buffer.from(ChunkPiece.encode({ index, data }).finish());
      assert.deepEqual(decodePiece(reference), { index, data });
      assert.deepEqual(ChunkPiece.toObject(ChunkPiece.decode(ours)).data ?? Buffer.alloc(0), data);
      if (index !== 0) assert.deepEqual(ours, reference); // proto3 omits a zero index; we always write it
    }
  });

  it('skips unknown fields and refuses malformed input', () => {
    const withExtra = Buffer.concat([
      Buffer.from([0x18, 0x05]),
      encodePiece({ index: 3, data: Buffer.from('hi') }),
    ]);
    assert.deepEqual(decodePiece(withExtra), { index: 3, data: Buffer.from('hi') });
    assert.throws(() => decodePiece(Buffer.from([0x12, 0x05, 0x01])), /overruns/);
    assert.throws(() => decodePiece(Buffer.from([0x08, 0xff])), /truncated/);
    assert.throws(() => decodePiece(Buffer.from([0x0b])), /wire type/);
  });
});
