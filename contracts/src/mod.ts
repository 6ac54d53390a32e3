/** Contracts shared by the agent and the operator. */
export {
  type ControlEvent,
  type ControlEventType,
  coordinateSchema,
  type DecodeResult,
  decodeEvent,
  EVENT_VERSION,
  encodeEvent,
  eventSchema,
  MAX_EVENT_BYTES,
  type MemberInfo,
  memberSchema,
  subjectFor,
  subjects,
} from './control-plane.ts';
