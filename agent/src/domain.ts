/**
 * Plain types and limits that several folders of the agent share. A leaf: it imports nothing, so any
 * folder may import it without making a cycle (agent/src/structure.test.ts checks both).
 */

/** A member that holds an object: its node id and data-plane address. */
export interface Holder {
  readonly nodeId: string;
  readonly grpc: string;
}

/** A Vivaldi network coordinate (overlay/vivaldi.ts): a point, a height and an error estimate. */
export interface Coordinate {
  readonly vec: readonly number[];
  /** ms */
  readonly height: number;
  readonly error: number;
}

/**
 * How far bytes travel, cheapest first: same node, same zone, same region, anywhere
 * (overlay/proximity.ts decides a peer's class).
 */
export const HOP_CLASSES = ['node', 'zone', 'region', 'remote'] as const;
export type HopClass = (typeof HOP_CLASSES)[number];

/** What is known of an object before its manifest: enough to lay out its chunks. */
export interface ObjectHead {
  key: string;
  size: number;
  chunkSize: number;
  contentType?: string;
}

/** The largest direct-exchange message. */
export const MAX_EXCHANGE_BYTES = 1024 * 1024;
/** Direct-exchange topics are 1-128 of [A-Za-z0-9._-]. */
export const TOPIC = /^[A-Za-z0-9._-]{1,128}$/;
