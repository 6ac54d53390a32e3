import type { IncomingMessage, ServerResponse } from 'node:http';
import { MAX_EXCHANGE_BYTES, TOPIC } from '../domain.ts';
import type { ExchangeMessage, Inbox } from '../exchange/inbox.ts';
import type { PeerTransport } from '../transport/peer-transport.ts';
import { HttpError, sendError, toHttpError } from './errors.ts';
import { sendJson } from './json.ts';

/** Bytes a receiving client may leave unread before it is disconnected. */
export const MAX_UNREAD_BYTES = 16 * 1024 * 1024;

const TARGET = /^(all|zone:[A-Za-z0-9._-]{1,63}|region:[A-Za-z0-9._-]{1,63}|[A-Za-z0-9._-]{1,253})$/;

export interface ExchangeDeps {
  inbox: Inbox;
  nodeId: string;
  targets: (target: string) => { self: boolean; peers: { id: string; transport: PeerTransport }[] };
  /** Resolves once this node's view of the mesh is formed; true when it had to wait (Overlay.untilJoined). */
  untilJoined?: () => Promise<boolean>;
  /** Tries now the members `target` names that do not count alive; true when one is alive then (Overlay.reviveNow). */
  reviveNow?: (target: string) => Promise<boolean>;
  timeoutMs: number;
  /** Hears each receiver cut off for leaving too much unread. */
  onCutOff?: () => void;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const part of req) {
    size += (part as Buffer).length;
    if (size > MAX_EXCHANGE_BYTES)
      throw new HttpError(413, 'PayloadTooLarge', `messages are at most ${MAX_EXCHANGE_BYTES} bytes`);
    parts.push(part as Buffer);
  }
  return Buffer.concat(parts);
}

/**
 * `POST /v1/exchange/{target}/{topic}`: sends the body to the consumers of `topic` on every node the
 * target names (a node id, `zone:<z>`, `region:<r>` or `all`), node to node over gRPC. Answers 202
 * with the nodes it reached and those it could not; at most once, no retries. `target` and `topic`:
 * the path's, percent-decoded.
 */
export function sendHandler(deps: ExchangeDeps) {
  return async (
    req: IncomingMessage,
    res: ServerResponse,
    { target, topic }: { target: string; topic: string },
  ): Promise<void> => {
    try {
      if (!TARGET.test(target))
        throw new HttpError(400, 'InvalidTarget', 'target: a node id, zone:<zone>, region:<region> or all');
      if (!TOPIC.test(topic)) throw new HttpError(400, 'InvalidTopic', 'topics are 1-128 of [A-Za-z0-9._-]');
      const body = await readBody(req);
      const contentType = req.headers['content-type'] ?? 'application/octet-stream';
      let { self, peers } = deps.targets(target);
      // No match while this node is still meeting the mesh (it just started): looked up again once it has.
      if (!self && peers.length === 0 && (await deps.untilJoined?.()))
        ({ self, peers } = deps.targets(target));
      // Named nodes that are not alive may be back since a moment (a partition just healed, and the
      // periodic retry comes up to a period later): tried now, before "no such target".
      if (!self && peers.length === 0 && (await deps.reviveNow?.(target)))
        ({ self, peers } = deps.targets(target));
      if (!self && peers.length === 0)
        throw new HttpError(404, 'NoSuchTarget', `no live node matches ${target}`);
      const message = { topic, from: deps.nodeId, body, contentType };
      const results = await Promise.all(
        peers.map(({ id, transport }) =>
          transport.deliver(message, AbortSignal.timeout(deps.timeoutMs)).then(
            () => ({ node: id }),
            (error: Error) => ({ node: id, error: error.message }),
          ),
        ),
      );
      if (self) deps.inbox.deliver({ ...message, receivedAtMs: Date.now() });
      sendJson(res, 202, {
        delivered: [
          ...(self ? [deps.nodeId] : []),
          ...results.filter((r) => !('error' in r)).map((r) => r.node),
        ],
        failed: results.filter((r) => 'error' in r),
      });
    } catch (error) {
      sendError(res, toHttpError(error));
    }
  };
}

/**
 * `GET /v1/exchange/{topic}`: a stream of this node's messages for `topic`, one JSON object per line
 * (`topic`, `from`, `receivedAtMs`, `contentType`, `body` in base64): first those queued while no one
 * listened, then each as it arrives, until the client disconnects. `topic`: the path's, percent-decoded.
 */
export function receiveHandler(deps: ExchangeDeps) {
  return (req: IncomingMessage, res: ServerResponse, { topic }: { topic: string }): void => {
    if (!TOPIC.test(topic))
      return sendError(res, new HttpError(400, 'InvalidTopic', 'topics are 1-128 of [A-Za-z0-9._-]'));
    // HEAD would take the queue into a response without a body.
    if (req.method !== 'GET')
      return sendError(res, new HttpError(405, 'MethodNotAllowed', 'GET only', { Allow: 'GET' }));
    res.statusCode = 200;
    res.setHeader('Content-Type', 'application/x-ndjson');
    res.setHeader('Cache-Control', 'no-store');
    res.flushHeaders();
    // It waits for messages as long as its client stays: the server's idle timeout is not for it (a
    // receiver that stops reading is cut off below instead).
    req.socket.setTimeout(0);
    // A receiver that does not read is cut off once MAX_UNREAD_BYTES wait for it (its messages are not
    // kept in this process's memory without bound).
    const write = (m: ExchangeMessage) => {
      if (res.writableLength > MAX_UNREAD_BYTES) {
        deps.inbox.dropped++;
        deps.onCutOff?.();
        stop();
        res.destroy();
        return;
      }
      res.write(
        `${JSON.stringify({ topic: m.topic, from: m.from, receivedAtMs: m.receivedAtMs, contentType: m.contentType, body: m.body.toString('base64') })}\n`,
      );
    };
    const stop = deps.inbox.subscribe(topic, write);
    res.once('close', stop);
  };
}
