import type { Manifest } from '../cache/manifest.ts';
import { MAX_CLOCK_SKEW_MS } from '../time/clock.ts';

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
 * The newest version of a key that has a holder (the latest creation time; every manifest here has
 * passed the signature check, PeerFetcherOptions.verify, before its answer got here), with its
 * holders (each once, by address, in the order first heard of). A purge wins over every version
 * created before it: 'purged' when no newer version has a holder, undefined when nobody knows the key.
 *
 * Holders do not vote: an answer names holders that need only be members (nothing proves they hold
 * the version), so one owner naming three members outvoted two honest owners and rolled readers back
 * to an older signed version. How many holders a version has only breaks a tie between versions made
 * in the same millisecond (then the lower root, so every reader picks the same). What a vote once
 * guarded against, a single node passing off a version nobody made, the signature bounds now: a
 * newer version must be signed by a node of the mesh under its own identity and be dated at most the
 * clock skew (5 minutes) ahead, which is no more than that node could do by accepting a PUT with
 * its clock that far ahead.
 */
export function chooseVersion<P extends { readonly address: string }>(
  answers: readonly (VersionAnswer<P> | undefined)[],
  nowMs = Date.now(),
): { manifest: Manifest; holders: P[] } | 'purged' | undefined {
  const byRoot = new Map<string, { manifest: Manifest; holders: Map<string, P> }>();
  let purgedAtMs = -1;
  // Dated further ahead than clocks may disagree: not believed, signed or not (with mTLS off nothing
  // is signed, and one answer from the far future would win every read, and outlive every purge).
  const latest = nowMs + MAX_CLOCK_SKEW_MS;
  for (const answer of answers) {
    if (!answer) continue;
    if ((answer.kind === 'purged' ? answer.purgedAtMs : answer.manifest.createdAtMs) > latest) continue;
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
    .sort(
      (a, b) =>
        b.manifest.createdAtMs - a.manifest.createdAtMs ||
        b.holders.size - a.holders.size ||
        (a.manifest.root < b.manifest.root ? -1 : 1),
    )[0];
  if (!best) return purgedAtMs >= 0 ? 'purged' : undefined;
  return { manifest: best.manifest, holders: [...best.holders.values()] };
}
