/**
 * The version of the protocol agents speak to each other (gRPC between agents, control-plane events),
 * and how two of them agree on one. docs/upgrades.md has the policy; in short:
 * - a version is `major.minor`. A minor adds only what an older peer of the same major may ignore
 *   (an optional field, an event type it drops as unknown); a major changes what a peer must
 *   understand.
 * - each build speaks a range of versions, `min` to `max`, and advertises it (gRPC metadata on every
 *   call, the Ping answer, every event's envelope). Two agents use the highest version both speak;
 *   agents whose ranges do not overlap refuse each other, with that reason, and never become members.
 * - a release keeps `min` at or below the previous release's `max`, so agents one release apart
 *   always overlap: a DaemonSet rollout runs old and new side by side.
 */
export interface ProtocolVersion {
  readonly major: number;
  readonly minor: number;
}

export interface ProtocolRange {
  readonly min: ProtocolVersion;
  readonly max: ProtocolVersion;
}

/**
 * What this build speaks. 1.0 is the protocol as it was when versions were first advertised: a peer
 * built before then advertises nothing and is taken to speak 1.0 (UNVERSIONED), and this build's 1.0
 * events are byte for byte what such a peer sends. 1.1 adds the Release call (peer.proto): a holder
 * tells owners it let objects go; a 1.0 peer answers UNIMPLEMENTED, and its records expire instead.
 */
export const PROTOCOL: ProtocolRange = { min: { major: 1, minor: 0 }, max: { major: 1, minor: 1 } };

/** The range taken for a peer that advertises none (a build from before versions were advertised). */
export const UNVERSIONED: ProtocolRange = { min: { major: 1, minor: 0 }, max: { major: 1, minor: 0 } };

/** The gRPC metadata key every call carries this node's range in (and a refusal answers with). */
export const PROTOCOL_METADATA = 'edgemesh-protocol';

/** Negative when a is older than b, 0 when equal, positive when newer. */
export function compareVersions(a: ProtocolVersion, b: ProtocolVersion): number {
  return a.major - b.major || a.minor - b.minor;
}

export const formatVersion = (v: ProtocolVersion): string => `${v.major}.${v.minor}`;

/** `1.0-1.2` (always both ends: what parseRange reads). */
export const formatRange = (r: ProtocolRange): string => `${formatVersion(r.min)}-${formatVersion(r.max)}`;

const VERSION = /^(\d{1,4})\.(\d{1,4})$/;

export function parseVersion(text: string): ProtocolVersion | undefined {
  const match = VERSION.exec(text);
  return match ? { major: Number(match[1]), minor: Number(match[2]) } : undefined;
}

/**
 * Reads `1.0-1.2`, or a single version `1.2` (a range of one). Undefined for anything else, and for
 * a range whose min is above its max (at most 32 characters are read: it comes from peers).
 */
export function parseRange(text: string): ProtocolRange | undefined {
  if (text.length > 32) return undefined;
  const [low = '', high = low, ...rest] = text.split('-');
  if (rest.length > 0) return undefined;
  const min = parseVersion(low);
  const max = parseVersion(high);
  return min && max && compareVersions(min, max) <= 0 ? { min, max } : undefined;
}

/** The highest version both ranges hold; undefined when they do not overlap. */
export function negotiate(a: ProtocolRange, b: ProtocolRange): ProtocolVersion | undefined {
  const high = compareVersions(a.max, b.max) <= 0 ? a.max : b.max;
  const low = compareVersions(a.min, b.min) >= 0 ? a.min : b.min;
  return compareVersions(low, high) <= 0 ? high : undefined;
}

/**
 * Whether an event sent at version `v` is for a node speaking `range`: any minor of a major the range
 * holds, not older than its min. A newer minor of a major it speaks is accepted (what that minor
 * added is ignored: unknown fields are stripped, unknown event types dropped).
 */
export function acceptsEvent(range: ProtocolRange, v: ProtocolVersion): boolean {
  return v.major >= range.min.major && v.major <= range.max.major && compareVersions(v, range.min) >= 0;
}
