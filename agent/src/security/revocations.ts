/**
 * The nodes of this mesh whose certificates are refused, whatever CA signed them and however long
 * they still run. Filled from the operator's signed revocation list; changes apply to the next call
 * and the next handshake, and `onChange` listeners close what is open.
 */
export class Revocations {
  #nodes = new Set<string>();
  readonly #listeners = new Set<(revoked: ReadonlySet<string>) => void>();

  revoked(node: string): boolean {
    return this.#nodes.has(node);
  }

  list(): string[] {
    return [...this.#nodes].sort();
  }

  /** Replaces the list; tells listeners the nodes newly revoked. */
  replace(nodes: Iterable<string>): void {
    const next = new Set(nodes);
    const added = new Set([...next].filter((n) => !this.#nodes.has(n)));
    this.#nodes = next;
    if (added.size > 0) for (const listener of this.#listeners) listener(added);
  }

  onRevoked(listener: (revoked: ReadonlySet<string>) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
