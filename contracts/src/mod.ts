/** Contracts shared by the agent and the operator. */
export {
  type ControlEvent,
  type ControlEventType,
  coordinateSchema,
  type DecodeResult,
  decodeEvent,
  EVENT_VERSION,
  hostPortSchema,
  encodeEvent,
  eventSchema,
  MAX_EVENT_BYTES,
  type MemberInfo,
  memberSchema,
  meshNameSchema,
  revocationSignedBytes,
  subjectFor,
  subjects,
} from './control-plane.ts';
