import { verify } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { revocationSignedBytes } from '@edgemesh/contracts';
import type { Logger } from '../telemetry/logger.ts';
import { MAX_CLOCK_SKEW_MS } from '../time/clock.ts';
import type { NodeCredentials } from './node-credentials.ts';
import type { Revocations } from './revocations.ts';
import { every } from '../time/every.ts';

/** A revocation list as the operator signs it (the trust ConfigMap's revoked.json, and on NATS). */
export interface SignedRevocations {
  nodes: string[];
  issuedAtMs: number;
  /** The mesh CA's signature over revocationSignedBytes, base64. */
  signature: string;
}

export interface RevocationListOptions {
  credentials: NodeCredentials;
  revocations: Revocations;
  /** The control-plane mesh name the list is signed for. */
  mesh: string;
  logger: Logger;
  now: () => number;
  /** The trust ConfigMap's revoked.json (Kubernetes), read again every few seconds. */
  file?: string | undefined;
  /**
   * Where the last list applied is kept (the store's directory), so that a restarted agent refuses
   * at once what it refused before, and an older list replayed to it is stale.
   */
  stateFile?: string | undefined;
}

/**
 * Keeps `revocations` at the newest revocation list the mesh's CA signed, from NATS (within
 * seconds) and from a file (at start, and for a node that missed the event), read again every few
 * seconds. A list not signed by a CA of the trust bundle, for another mesh, older than the one
 * applied, or dated ahead, is refused.
 */
export class RevocationList {
  readonly #opts: RevocationListOptions;
  #issuedAtMs = -1;
  #timer: NodeJS.Timeout | undefined;
  #lastFile = '';
  /** The text of a list dated ahead of this clock that was said (once a text, not at every read). */
  #futureSaid = '';
  #saving: Promise<void> = Promise.resolve();

  constructor(opts: RevocationListOptions) {
    this.#opts = opts;
  }

  /** Applies `list` if it is good and newer; why not, otherwise ('stale' when it is not newer). */
  apply(list: SignedRevocations, source: string): 'applied' | 'stale' | 'bad-signature' | 'future' {
    if (list.issuedAtMs <= this.#issuedAtMs) return 'stale';
    if (list.issuedAtMs > this.#opts.now() + MAX_CLOCK_SKEW_MS) return 'future';
    const bytes = revocationSignedBytes(this.#opts.mesh, list.nodes, list.issuedAtMs);
    const signature = Buffer.from(list.signature, 'base64');
    const signed = this.#opts.credentials.trust.some((ca) => {
      try {
        return verify('sha256', bytes, ca.publicKey, signature);
      } catch {
        return false;
      }
    });
    if (!signed) {
      this.#opts.logger.warn({ source }, 'revocation list not signed by the mesh CA: ignored');
      return 'bad-signature';
    }
    this.#issuedAtMs = list.issuedAtMs;
    this.#opts.revocations.replace(list.nodes);
    if (this.#opts.stateFile && source !== 'saved') this.#save(list);
    this.#opts.logger.info(
      { source, revoked: list.nodes, issuedAtMs: list.issuedAtMs },
      'revocation list applied',
    );
    return 'applied';
  }

  /** Applies the list saved before a restart, reads the file now and then every `intervalMs`. */
  async start(intervalMs = 5000): Promise<void> {
    if (this.#opts.stateFile) {
      const saved = await readFile(this.#opts.stateFile, 'utf8').catch(() => undefined);
      const list = saved === undefined ? undefined : parseRevocations(saved);
      if (list) this.apply(list, 'saved');
    }
    if (!this.#opts.file) return;
    await this.#readFile();
    this.#timer = every(
      intervalMs,
      () => this.#readFile(),
      (error) => this.#opts.logger.warn({ err: error.message }, 'revocation list not read'),
    );
  }

  close(): void {
    clearInterval(this.#timer);
  }

  /** Resolves once the lists applied so far are saved. */
  saved(): Promise<void> {
    return this.#saving;
  }

  #save(list: SignedRevocations): void {
    const file = this.#opts.stateFile!;
    this.#saving = this.#saving
      .then(async () => {
        await writeFile(`${file}.tmp`, JSON.stringify(list));
        await rename(`${file}.tmp`, file);
      })
      .catch((error: unknown) =>
        this.#opts.logger.warn({ err: (error as Error).message }, 'revocation list not saved'),
      );
  }

  async #readFile(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.#opts.file!, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT')
        this.#opts.logger.warn({ err: (error as Error).message }, 'revocation list not read');
      return;
    }
    // The same text is looked at again when the trust bundle changes: a list signed by a CA the
    // bundle gains later (the two files are not updated together) is applied then. One dated ahead
    // of this clock is looked at again at each read.
    const read = `${this.#opts.credentials.trust.map((ca) => ca.fingerprint256).join(' ')}\n${text}`;
    if (read === this.#lastFile) return;
    this.#lastFile = read;
    const list = parseRevocations(text);
    if (!list)
      return void this.#opts.logger.warn({ file: this.#opts.file }, 'revocation list unreadable: ignored');
    if (this.apply(list, 'file') !== 'future') return;
    this.#lastFile = '';
    if (this.#futureSaid === text) return;
    this.#futureSaid = text;
    this.#opts.logger.warn(
      { file: this.#opts.file, issuedAtMs: list.issuedAtMs },
      'revocation list dated ahead of this clock: read again until it is not (is this clock behind?)',
    );
  }
}

/** A revocation list from text (JSON), checked for shape; undefined when it is not one. */
export function parseRevocations(text: string): SignedRevocations | undefined {
  try {
    const raw = JSON.parse(text) as Record<string, unknown>;
    const { nodes, issuedAtMs, signature } = raw;
    if (
      !Array.isArray(nodes) ||
      nodes.length > 1000 ||
      !nodes.every((n) => typeof n === 'string' && n.length > 0 && n.length <= 253) ||
      !Number.isSafeInteger(issuedAtMs) ||
      typeof signature !== 'string' ||
      signature.length > 256
    )
      return undefined;
    return { nodes: nodes as string[], issuedAtMs: issuedAtMs as number, signature };
  } catch {
    return undefined;
  }
}
