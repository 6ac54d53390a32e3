/** One message for a topic, as a local consumer receives it. */
export interface ExchangeMessage {
  topic: string;
  from: string;
  receivedAtMs: number;
  contentType: string;
  body: Buffer;
}

/** Messages kept per topic while no consumer reads it; the oldest go first. */
export const MAX_QUEUED = 1000;
/** Bytes kept per topic while no consumer reads it. */
export const MAX_QUEUED_BYTES = 16 * 1024 * 1024;
/** Bytes kept over all topics, and topics with a queue: past them the oldest queues lose messages first. */
export const MAX_TOTAL_QUEUED_BYTES = 64 * 1024 * 1024;
export const MAX_QUEUED_TOPICS = 1024;

type Consumer = (message: ExchangeMessage) => void;

/**
 * Messages sent to this node, by topic. With consumers connected, each message goes to all of them
 * at once; with none, it waits in a bounded queue (the oldest dropped and counted past the bounds)
 * and the next consumer gets the queue first. Delivery is at most once and in arrival order.
 */
export class Inbox {
  readonly #queues = new Map<string, { messages: ExchangeMessage[]; bytes: number }>();
  readonly #consumers = new Map<string, Set<Consumer>>();
  #totalBytes = 0;
  dropped = 0;
  /** Messages handed to this inbox, ever (the agent's quiet compaction counts them as work). */
  delivered = 0;

  deliver(message: ExchangeMessage): void {
    this.delivered++;
    const consumers = this.#consumers.get(message.topic);
    if (consumers && consumers.size > 0) {
      for (const consume of consumers) consume(message);
      return;
    }
    const queue = this.#queues.get(message.topic) ?? { messages: [], bytes: 0 };
    this.#queues.set(message.topic, queue);
    queue.messages.push(message);
    queue.bytes += message.body.length;
    this.#totalBytes += message.body.length;
    while (queue.messages.length > MAX_QUEUED || queue.bytes > MAX_QUEUED_BYTES)
      this.#dropOldest(message.topic);
    // Over all topics: the queues made first lose their oldest messages first (a flood of topics or
    // bytes for no receiver cannot grow the agent).
    for (const topic of this.#queues.keys()) {
      if (this.#totalBytes <= MAX_TOTAL_QUEUED_BYTES && this.#queues.size <= MAX_QUEUED_TOPICS) break;
      while (
        this.#queues.has(topic) &&
        (this.#totalBytes > MAX_TOTAL_QUEUED_BYTES || this.#queues.size > MAX_QUEUED_TOPICS)
      )
        this.#dropOldest(topic);
    }
  }

  /** Bytes waiting for a receiver, over all topics. */
  get queuedBytes(): number {
    return this.#totalBytes;
  }

  #dropOldest(topic: string): void {
    const queue = this.#queues.get(topic);
    const message = queue?.messages.shift();
    if (!queue || !message) return;
    queue.bytes -= message.body.length;
    this.#totalBytes -= message.body.length;
    this.dropped++;
    if (queue.messages.length === 0) this.#queues.delete(topic);
  }

  /** Receives `topic`'s queued messages, then each new one, until the returned function is called. */
  subscribe(topic: string, consume: Consumer): () => void {
    const queued = this.#queues.get(topic);
    this.#queues.delete(topic);
    this.#totalBytes -= queued?.bytes ?? 0;
    for (const message of queued?.messages ?? []) consume(message);
    const consumers = this.#consumers.get(topic) ?? new Set<Consumer>();
    consumers.add(consume);
    this.#consumers.set(topic, consumers);
    return () => {
      consumers.delete(consume);
      if (consumers.size === 0) this.#consumers.delete(topic);
    };
  }
}
