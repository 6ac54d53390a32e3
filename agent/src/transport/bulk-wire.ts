import { createHash, type Hash } from 'node:crypto';
import type { Socket } from 'node:net';
import type { ReceiveBuffers } from './peer-transport.ts';

/**
 * The bulk stream: chunk bodies between nodes on a lean framing over mutual TLS, on the gRPC port
 * (ALPN tells them apart: `h2` is gRPC, BULK_ALPN is this). gRPC keeps every control-sized call.
 *
 * One request at a time per connection; a connection is reused for the next request once the last
 * one ended. The client sends a request frame, `[u32 length][JSON BulkRequest]`; the server answers
 * with frames of a 9-byte header, `[u8 type][u32 index][u32 length]`, and `length` bytes:
 * - DATA: chunk `index` of the request, whole (its length is the chunk's);
 * - WAIT: nothing yet for chunk `index` (the request waits for the upload budget), the server is alive;
 * - ERROR: a JSON BulkError, and the request is over (the connection stays usable);
 * - END: every chunk was sent.
 * Backpressure is TCP's: each side reads only as fast as it consumes.
 */
export const BULK_ALPN = 'edgemesh-bulk/1';

export const FRAME = { DATA: 1, WAIT: 2, ERROR: 3, END: 4 } as const;
export const HEADER_BYTES = 9;
/** A request names at most MAX_DIGESTS_PER_FETCH digests: 4096 x 66 characters and some. */
export const MAX_REQUEST_BYTES = 512 * 1024;
const MAX_ERROR_BYTES = 4096;

export interface BulkRequest {
  /** Chunk digests, hex. */
  digests: string[];
  /** The requesting node's id (checked against its certificate). */
  from: string;
  /** Trace context and the caller's protocol range (what gRPC would send as metadata). */
  meta: Record<string, string>;
}

/** Why the server ended a request: `code` is the gRPC status the same refusal has on FetchChunks. */
export interface BulkError {
  code: number;
  message: string;
}

export function encodeRequest(request: BulkRequest): Buffer {
  const body = Buffer.from(JSON.stringify(request));
  const out = Buffer.allocUnsafe(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  body.copy(out, 4);
  return out;
}

export function frameHeader(type: number, index: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(HEADER_BYTES);
  out.writeUInt8(type, 0);
  out.writeUInt32BE(index, 1);
  out.writeUInt32BE(length, 5);
  return out;
}

export function errorFrame(error: BulkError): Buffer {
  const body = Buffer.from(JSON.stringify({ code: error.code, message: error.message.slice(0, 1024) }));
  return Buffer.concat([frameHeader(FRAME.ERROR, 0, body.length), body]);
}

/** The request in `body`, checked; throws a readable Error for anything else. */
export function parseRequest(body: Buffer): BulkRequest {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw new Error('the request is not JSON');
  }
  const r = value as Partial<BulkRequest> | null;
  if (typeof r !== 'object' || r === null || !Array.isArray(r.digests) || typeof r.from !== 'string')
    throw new Error('the request needs digests and from');
  if (!r.digests.every((d) => typeof d === 'string')) throw new Error('digests are hex strings');
  const meta: Record<string, string> = {};
  if (typeof r.meta === 'object' && r.meta !== null)
    for (const [k, v] of Object.entries(r.meta)) if (typeof v === 'string') meta[k] = v.slice(0, 512);
  return { digests: r.digests, from: r.from, meta };
}

/**
 * Reads request frames off a server's socket, one at a time: `next` resolves with the next request,
 * or undefined when the client hung up. The socket is paused between requests (a client that sends
 * before its last answer ended waits in TCP).
 */
export class RequestReader {
  readonly #socket: Socket;
  #buffered: Buffer[] = [];
  #bytes = 0;
  #want: ((body: Buffer | undefined) => void) | undefined;
  /** The length prefix of the request being read, once its 4 bytes are here. */
  #length: number | undefined;
  readonly #onData = (data: Buffer) => {
    this.#buffered.push(data);
    this.#bytes += data.length;
    this.#take();
  };
  #failed: ((error: Error) => void) | undefined;
  #ended = false;

  constructor(socket: Socket) {
    this.#socket = socket;
    socket.pause();
    socket.on('data', this.#onData);
    socket.on('end', () => {
      this.#ended = true;
      this.#take();
    });
    socket.on('close', () => {
      this.#ended = true;
      this.#take();
    });
  }

  /** Everything received and not yet taken, as one buffer. */
  #joined(): Buffer {
    const all = this.#buffered.length === 1 ? this.#buffered[0]! : Buffer.concat(this.#buffered);
    this.#buffered = [all];
    return all;
  }

  /** Stops reading requests: the connection is closing. */
  close(): void {
    this.#socket.off('data', this.#onData);
    this.#buffered = [];
    this.#bytes = 0;
  }

  /** The next request's body; undefined at the end of the connection. Throws on an oversized one. */
  next(): Promise<Buffer | undefined> {
    return new Promise((resolve, reject) => {
      this.#want = resolve;
      this.#failed = reject;
      this.#take();
      if (this.#want === resolve) this.#socket.resume();
    });
  }

  #take(): void {
    const want = this.#want;
    if (!want) return;
    if (this.#length === undefined && this.#bytes >= 4) {
      const all = this.#joined();
      this.#length = all.readUInt32BE(0);
      if (this.#length > MAX_REQUEST_BYTES) {
        this.#want = undefined;
        this.#failed?.(new Error(`a request of ${this.#length} bytes (at most ${MAX_REQUEST_BYTES})`));
        return;
      }
    }
    // Joined once the whole request is here (a request sent a byte at a time costs no more).
    if (this.#length !== undefined && this.#bytes >= 4 + this.#length) {
      const all = this.#joined();
      const body = all.subarray(4, 4 + this.#length);
      const rest = all.subarray(4 + this.#length);
      this.#buffered = rest.length > 0 ? [rest] : [];
      this.#bytes = rest.length;
      this.#length = undefined;
      this.#want = undefined;
      this.#socket.pause();
      want(body);
      return;
    }
    if (this.#ended) {
      this.#want = undefined;
      want(undefined);
    }
  }
}

/** One answer frame as the client reads it: DATA carries the chunk, ERROR its parsed BulkError. */
export type ResponseFrame =
  | { type: typeof FRAME.DATA; index: number; data: Buffer; digest: string }
  | { type: typeof FRAME.WAIT; index: number }
  | { type: typeof FRAME.ERROR; error: BulkError }
  | { type: typeof FRAME.END };

/**
 * Where a client connection's decrypted bytes land: the `onread` option of `tls.connect`, one per
 * connection for its life. TLS writes each record's plaintext straight into the buffer the answer
 * being read names (ResponseReader.target): the chunk's own buffer at the next byte it lacks, or the
 * frame header. So a chunk's bytes are copied once, by TLS, into the buffer that will hold them, and
 * no buffer is allocated per record (with `data` events each record is a new ArrayBuffer, which V8
 * counts as external memory and pays for in full collections). Bytes that come while no answer is
 * being read break the protocol: `onStray` (the caller closes the connection).
 */
export class ClientReads {
  #reader: ResponseReader | undefined;
  readonly #idle = Buffer.allocUnsafe(HEADER_BYTES);
  readonly #onStray: () => void;
  /** The option for `tls.connect`. */
  readonly onread = {
    buffer: (): Buffer => this.#reader?.target() ?? this.#idle,
    callback: (n: number, buffer: Uint8Array): boolean => {
      const reader = this.#reader;
      if (!reader) {
        this.#onStray();
        return false;
      }
      reader.receive(Buffer.from(buffer.buffer, buffer.byteOffset, n)); // a view, not a copy
      return true;
    },
  };

  constructor(onStray: () => void) {
    this.#onStray = onStray;
  }

  attach(reader: ResponseReader): void {
    this.#reader = reader;
  }

  detach(reader: ResponseReader): void {
    if (this.#reader === reader) this.#reader = undefined;
  }
}

/**
 * Parses answer frames off a client's connection for one request, as `reads` (ClientReads) hands it
 * the bytes. A chunk's bytes arrive in a buffer of the chunk's length (`lengthOf(index)`: the length
 * the caller expects; a frame announcing another is a protocol error), in place when TLS wrote them
 * where `target()` said (else copied there), and are hashed (SHA-256) record by record as they
 * arrive, while they are in the CPU's cache. Reading pauses while a parsed chunk waits for the
 * consumer, so a slow consumer slows the sender through TCP.
 */
export class ResponseReader {
  readonly #socket: Socket;
  readonly #reads: ClientReads;
  readonly #lengthOf: (index: number) => number | undefined;
  readonly #into: ReceiveBuffers | undefined;
  /** The index the next chunk (DATA frame) must have: chunks come in order, each once. */
  #nextChunk = 0;
  readonly #frames: ResponseFrame[] = [];
  #header = Buffer.allocUnsafe(HEADER_BYTES);
  #headerFill = 0;
  #current: { type: number; index: number; body: Buffer; filled: number; hash?: Hash } | undefined;
  #error: Error | undefined;
  /** END or ERROR was read: any byte after it breaks the protocol. */
  #ended = false;
  #wake: (() => void) | undefined;
  readonly #onEnd = () => this.#fail(new Error('the connection closed mid-answer'));
  readonly #onError = (error: Error) => this.#fail(error);

  /**
   * `into`: the caller's buffers for chunks' bodies, when it gives one (reused once every holder of
   * the chunk is done with it); else a new one is made.
   */
  constructor(
    socket: Socket,
    reads: ClientReads,
    lengthOf: (index: number) => number | undefined,
    into?: ReceiveBuffers,
  ) {
    this.#socket = socket;
    this.#reads = reads;
    this.#lengthOf = lengthOf;
    this.#into = into;
    reads.attach(this);
    socket.on('end', this.#onEnd);
    socket.on('close', this.#onEnd);
    socket.on('error', this.#onError);
    socket.resume();
  }

  /** The next frame; rejects when the connection fails or the peer breaks the framing. */
  async next(): Promise<ResponseFrame> {
    for (;;) {
      const frame = this.#frames.shift();
      if (frame) return frame;
      if (this.#error) throw this.#error;
      this.#socket.resume();
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
  }

  /** Stops listening (the socket is handed back to the pool or destroyed by the caller). */
  detach(): void {
    this.#reads.detach(this);
    this.#socket.off('end', this.#onEnd);
    this.#socket.off('close', this.#onEnd);
    this.#socket.off('error', this.#onError);
    this.#socket.pause();
  }

  /** The bodies of chunks received, or being received, that next() has not handed over. */
  unread(): Buffer[] {
    const bodies: Buffer[] = [];
    for (const frame of this.#frames) if (frame.type === FRAME.DATA) bodies.push(frame.data);
    if (this.#current?.type === FRAME.DATA) bodies.push(this.#current.body);
    return bodies;
  }

  /** Whether the answer ended exactly at a frame boundary with nothing after it (reusable). */
  get clean(): boolean {
    return (
      !this.#error && this.#ended && this.#headerFill === 0 && !this.#current && this.#frames.length === 0
    );
  }

  #fail(error: Error): void {
    this.#error ??= error;
    this.#signal();
  }

  #signal(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /** Where the next bytes belong: the rest of the chunk (or error) being read, else of the header. */
  target(): Buffer {
    const current = this.#current;
    return current ? current.body.subarray(current.filled) : this.#header.subarray(this.#headerFill);
  }

  /** Bytes of the answer, in order: in place where target() pointed, or anywhere else. */
  receive(data: Buffer): void {
    let offset = 0;
    while (offset < data.length && !this.#error) {
      if (this.#ended) {
        this.#fail(new Error('bytes after the end of the answer'));
        break;
      }
      if (!this.#current) {
        const n = Math.min(HEADER_BYTES - this.#headerFill, data.length - offset);
        copyUnlessThere(data, offset, n, this.#header, this.#headerFill);
        this.#headerFill += n;
        offset += n;
        if (this.#headerFill < HEADER_BYTES) break;
        this.#headerFill = 0;
        const type = this.#header.readUInt8(0);
        const index = this.#header.readUInt32BE(1);
        const length = this.#header.readUInt32BE(5);
        const problem = this.#check(type, index, length);
        if (problem) {
          this.#fail(new Error(problem));
          break;
        }
        if (type === FRAME.WAIT) this.#frames.push({ type, index });
        else if (type === FRAME.END) {
          this.#ended = true;
          this.#frames.push({ type });
        } else if (length === 0) this.#finish({ type, index, body: Buffer.alloc(0) });
        else
          this.#current = {
            type,
            index,
            body: (type === FRAME.DATA ? this.#into?.take(length) : undefined) ?? Buffer.allocUnsafe(length),
            filled: 0,
            ...(type === FRAME.DATA ? { hash: createHash('sha256') } : {}),
          };
        continue;
      }
      const current = this.#current;
      const n = Math.min(current.body.length - current.filled, data.length - offset);
      copyUnlessThere(data, offset, n, current.body, current.filled);
      current.hash?.update(current.body.subarray(current.filled, current.filled + n));
      current.filled += n;
      offset += n;
      if (current.filled === current.body.length) {
        this.#current = undefined;
        this.#finish(current);
      }
    }
    // Whole chunks wait for the consumer: stop reading until it takes them (TCP then slows the peer).
    if (this.#frames.some((f) => f.type === FRAME.DATA)) this.#socket.pause();
    if (this.#frames.length > 0 || this.#error) this.#signal();
  }

  #check(type: number, index: number, length: number): string | undefined {
    switch (type) {
      case FRAME.DATA: {
        const expected = this.#lengthOf(index);
        if (expected === undefined) return `a chunk ${index} that was not asked for`;
        if (length !== expected) return `chunk ${index} of ${length} bytes, not ${expected}`;
        // Checked before its body is taken: a peer repeating a chunk would take buffer after buffer.
        if (index !== this.#nextChunk) return `unexpected chunk ${index} (expected ${this.#nextChunk})`;
        this.#nextChunk++;
        return undefined;
      }
      case FRAME.WAIT:
      case FRAME.END:
        return length === 0 ? undefined : `a frame of type ${type} with a body`;
      case FRAME.ERROR:
        return length <= MAX_ERROR_BYTES ? undefined : `an error of ${length} bytes`;
      default:
        return `an unknown frame type ${type}`;
    }
  }

  #finish(frame: { type: number; index: number; body: Buffer; hash?: Hash }): void {
    if (frame.type === FRAME.DATA) {
      const digest = (frame.hash ?? createHash('sha256').update(frame.body)).digest('hex');
      this.#frames.push({ type: FRAME.DATA, index: frame.index, data: frame.body, digest });
      return;
    }
    let error: BulkError = { code: 13, message: 'unreadable error' };
    try {
      const parsed = JSON.parse(frame.body.toString('utf8')) as Partial<BulkError>;
      if (typeof parsed.code === 'number' && typeof parsed.message === 'string')
        error = { code: parsed.code, message: parsed.message.slice(0, 1024) };
    } catch {
      // the default above
    }
    this.#ended = true; // an error ends the answer as END does: nothing may follow
    this.#frames.push({ type: FRAME.ERROR, error });
  }
}

/** Copies `n` bytes of `from` at `offset` to `to` at `at`, unless they are there already (in place). */
function copyUnlessThere(from: Buffer, offset: number, n: number, to: Buffer, at: number): void {
  const inPlace = from.buffer === to.buffer && from.byteOffset + offset === to.byteOffset + at;
  if (!inPlace) from.copy(to, at, offset, offset + n);
}
