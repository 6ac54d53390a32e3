import type { Manifest } from '../cache/manifest.ts';

/** One peer's answer to "what do you know of this key", as the locate step checked it. */
export type VersionAnswer<P> =
  | { kind: 'purged'; purgedAtMs: number }
  | {
      kind: 'found';
      peer: P;
      manifest: Manifest;
      /** The peer holds this version whole itself. */
      holds: boolean;
      /** Holders it named (already resolved to members this node trusts). */
      named: readonly P[];
    };

/**
 * The version of a key that most holders support, with those holders (each once, by address, in the
 * order first heard of). A purge wins over every version created before it: 'purged' when no newer
 * version has a holder, undefined when nobody knows the key.
 */
export function chooseVersion<P extends { readonly address: string }>(
  answers: readonly (VersionAnswer<P> | undefined)[],
): { manifest: Manifest; holders: P[] } | 'purged' | undefined {
  const byRoot = new Map<string, { manifest: Manifest; holders: Map<string, P> }>();
  let purgedAtMs = -1;
  for (const answer of answers) {
    if (!answer) continue;
    if (answer.kind === 'purged') {
      purgedAtMs = Math.max(purgedAtMs, answer.purgedAtMs);
      continue;
    }
    const group = byRoot.get(answer.manifest.root) ?? { manifest: answer.manifest, holders: new Map() };
    byRoot.set(answer.manifest.root, group);
    if (answer.holds) group.holders.set(answer.peer.address, answer.peer);
    for (const holder of answer.named) group.holders.set(holder.address, holder);
  }
  const best = [...byRoot.values()]
    .filter((g) => g.holders.size > 0 && g.manifest.createdAtMs > purgedAtMs)
    .sort((a, b) => b.holders.size - a.holders.size)[0];
  if (!best) return purgedAtMs >= 0 ? 'purged' : undefined;
  return { manifest: best.manifest, holders: [...best.holders.values()] };
}
