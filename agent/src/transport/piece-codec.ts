/**
 * A hand-written codec for `edgemesh.peer.v1.ChunkPiece`, wire-compatible with protobuf (a test checks
 * it against the .proto). It exists for speed: decoding returns a view into the received frame instead
 * of a copy, and encoding makes exactly one copy. Malformed input throws.
 */
export interface ChunkPiece {
  index: number;
  data: Buffer;
}

const INDEX_TAG = 0x08; // field 1, varint
const DATA_TAG = 0x12; // field 2, length-delimited

function varintLength(value: number): number {
  let n = 1;
  for (let v = value; v >= 0x80; v = Math.floor(v / 128)) n++;
  return n;
}

function writeVarint(out: Buffer, offset: number, value: number): number {
  let v = value;
  let o = offset;
  while (v >= 0x80) {
    out[o++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  out[o++] = v;
  return o;
}

let scratch = Buffer.alloc(0);

/**
 * Encodes into a buffer reused from call to call: the result is valid only until the next call.
 * That is safe: grpc-js calls this inside serializeMessage, which copies the result into the frame
 * in the same synchronous call (even when the stream had queued the message object);
 * were that to change, receivers' verification would catch it and the tests would fail.
 */
export function encodePiece(piece: ChunkPiece): Buffer {
  const { index, data } = piece;
  const size = 1 + varintLength(index) + 1 + varintLength(data.length) + data.length;
  if (scratch.length < size) scratch = Buffer.allocUnsafe(Math.max(size, 2 * scratch.length));
  const out = scratch.subarray(0, size);
  let o = out.writeUInt8(INDEX_TAG, 0);
  o = writeVarint(out, o, index);
  out[o++] = DATA_TAG;
  o = writeVarint(out, o, data.length);
  data.copy(out, o);
  return out;
}

export function decodePiece(buf: Buffer): ChunkPiece {
  let offset = 0;
  const readVarint = (): number => {
    let value = 0;
    for (let shift = 0; shift < 50; shift += 7) {
      if (offset >= buf.length) throw new Error('ChunkPiece: truncated varint');
      const byte = buf[offset++]!;
      value += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return value;
    }
    throw new Error('ChunkPiece: varint too long');
  };
  let index = 0;
  let data: Buffer = Buffer.alloc(0);
  while (offset < buf.length) {
    const tag = readVarint();
    const wire = tag & 7;
    if (tag === INDEX_TAG) index = readVarint();
    else if (wire === 0) readVarint();
    else if (wire === 2) {
      const length = readVarint();
      if (offset + length > buf.length) throw new Error('ChunkPiece: field overruns message');
      if (tag === DATA_TAG) data = buf.subarray(offset, offset + length);
      offset += length;
    } else if (wire === 1) offset += 8;
    else if (wire === 5) offset += 4;
    else throw new Error(`ChunkPiece: unsupported wire type ${wire}`);
  }
  if (offset > buf.length) throw new Error('ChunkPiece: truncated field');
  if (index > 0xffffffff) throw new Error('ChunkPiece: index out of range');
  return { index, data };
}
