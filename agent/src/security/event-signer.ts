import { type ControlEvent, SIGNATURE_HEADER, SIGNER_HEADER } from '@edgemesh/contracts';
import { NodeSigners } from '@edgemesh/identity/node';
import { MAX_CLOCK_SKEW_MS } from '../time/clock.ts';
import type { NodeCredentials } from './node-credentials.ts';
import type { Revocations } from './revocations.ts';

/** An event older than this is dropped: a replay window, not a delivery deadline (events repeat). */
export const MAX_EVENT_AGE_MS = 5 * 60_000;

/** Why a control-plane event was dropped (a counter label). */
export type EventRefusal =
  'unsigned' | 'unknown-sender' | 'bad-signature' | 'sender-mismatch' | 'revoked' | 'stale' | 'future';

/**
 * Signs the control-plane events this node publishes (the exact bytes, with its node key; its
 * certificate and the signature travel in NATS headers, so the event format is unchanged) and checks
 * every event received: signed by a node of this mesh (its certificate chains to the trust bundle and
 * is valid now), not revoked, that node is the event's sender (and the member an announce is about),
 * and sent within MAX_EVENT_AGE_MS and not ahead of this node's clock by more than the skew allowed.
 */
export class EventSigner {
  readonly #credentials: NodeCredentials;
  readonly #revocations: Revocations | undefined;
  readonly #now: () => number;
  readonly #signers: NodeSigners;

  constructor(credentials: NodeCredentials, opts: { revocations?: Revocations; now?: () => number } = {}) {
    this.#credentials = credentials;
    this.#revocations = opts.revocations;
    this.#now = opts.now ?? Date.now;
    this.#signers = new NodeSigners({
      trust: () => credentials.trust,
      mesh: credentials.mesh,
      now: this.#now,
    });
  }

  /** The headers that sign `data` as this node. */
  sign(data: Uint8Array): Record<string, string> {
    const { certificate, value } = this.#credentials.sign(data);
    return { [SIGNER_HEADER]: certificate, [SIGNATURE_HEADER]: value };
  }

  /** Undefined when `event` (decoded from `data`) may be acted on; else why not. */
  check(
    data: Uint8Array,
    header: (name: string) => string | undefined,
    event: ControlEvent,
  ): EventRefusal | undefined {
    // A revocation list carries the mesh CA's own signature, checked by its handler (RevocationList).
    if (event.type === 'mesh.revocations') return undefined;
    const signed = this.#signers.check(data, header(SIGNER_HEADER), header(SIGNATURE_HEADER));
    if ('refusal' in signed) return signed.refusal;
    const node = signed.identity.node;
    const now = this.#now();
    if (event.from !== node) return 'sender-mismatch';
    if (event.type === 'member.announce' && event.body.member.nodeId !== node) return 'sender-mismatch';
    if (event.type === 'member.leave' && event.body.nodeId !== node) return 'sender-mismatch';
    if (this.#revocations?.revoked(node)) return 'revoked';
    if (event.sentAtMs > now + MAX_CLOCK_SKEW_MS) return 'future';
    if (event.sentAtMs < now - MAX_EVENT_AGE_MS) return 'stale';
    return undefined;
  }
}
