import type { PeerTransport } from './peer-transport.ts';

const unsupported = (method: string) => () => Promise.reject(new Error(`${method} is not stubbed`));

/**
 * A PeerTransport for tests: every call fails ("not stubbed") unless `overrides` supplies it, so a
 * fake states only what it needs and new RPCs do not touch every fake.
 */
export function stubTransport(
  id: string,
  address: string,
  overrides: Partial<PeerTransport> = {},
): PeerTransport {
  return {
    id,
    address,
    getManifest: unsupported('getManifest'),
    fetchOrigin: unsupported('fetchOrigin'),
    hold: unsupported('hold'),
    release: unsupported('release'),
    replicate: unsupported('replicate'),
    purge: unsupported('purge'),
    deliver: unsupported('deliver'),
    ping: unsupported('ping'),
    probe: unsupported('probe'),
    fetchChunks: () => {
      throw new Error('fetchChunks is not stubbed');
    },
    watch: () => {
      throw new Error('watch is not stubbed');
    },
    close: () => undefined,
    ...overrides,
  };
}
