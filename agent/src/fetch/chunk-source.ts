import type { Manifest } from '../cache/manifest.ts';
import type { ObjectHandle, ObjectStore } from '../cache/object-store.ts';
import type { Source } from '../telemetry/counters.ts';

/**
 * An object being read, wherever its bytes come from: verified chunks by index. `close()` must be
 * called once the reader is done (it unpins or leaves a download).
 */
export interface ChunkSource {
  readonly manifest: Manifest;
  readonly source: Source;
  read(index: number): Promise<Buffer>;
  close(): void;
}

export function localSource(store: ObjectStore, handle: ObjectHandle): ChunkSource {
  return {
    manifest: handle.manifest,
    source: 'local',
    read: (index) => store.readChunk(handle.manifest.chunks[index]!),
    close: () => handle.release(),
  };
}
