import type { Manifest } from '../cache/manifest.ts';
import type { ObjectHandle, ObjectStore, PassReader } from '../cache/object-store.ts';
import type { Source } from '../telemetry/counters.ts';
import type { ObjectHead } from '../domain.ts';
import { headOf } from './swarm.ts';

/**
 * An object being read, wherever its bytes come from: verified chunks by index. `close()` must be
 * called once the reader is done (it unpins or leaves a download).
 */
export interface ChunkSource {
  /** The object's shape: enough to serve it. */
  readonly head: ObjectHead;
  /** Its manifest, unless it is still being fetched from the origin by an owner. */
  readonly manifest?: Manifest;
  readonly source: Source;
  read(index: number): Promise<Buffer>;
  /**
   * For a reader of chunks `first` to `last` once, in order (a response): a reader that may reuse
   * the memory of chunks it gave once told (`done`) that their bytes were sent. Without it, `read`.
   */
  pass?(first: number, last: number): PassReader;
  close(): void;
}

/** Reads a pinned local object; `source` says how it got here (`origin` right after an origin fetch). */
export function localSource(store: ObjectStore, handle: ObjectHandle, source: Source = 'local'): ChunkSource {
  return {
    head: headOf(handle.manifest),
    manifest: handle.manifest,
    source,
    read: (index) => store.readChunk(handle.manifest.chunks[index]!),
    pass: (first, last) => store.passReader(handle.manifest, first, last),
    close: () => handle.release(),
  };
}
