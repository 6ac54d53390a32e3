import { ObjectNotFoundError } from '../cache/errors.ts';
import type { Manifest } from '../cache/manifest.ts';
import type { Holder } from '../domain.ts';
import type { PeerServerOptions, WatchStream } from '../transport/peer-server.ts';
import { PeerFetchError } from './download.ts';
import type { Swarm } from './swarm.ts';

export interface WatchPolicyOptions {
  /** The complete objects this node holds. */
  lookup: (key: string) => Manifest | undefined;
  /** The objects this node is getting and the members getting them too. */
  swarm: Swarm;
  /** Whether `holder` is a member confirmed at that address (only those are named to others). */
  trusted: (holder: Holder) => boolean;
}

/**
 * The Watch policy of a node (PeerServerOptions.watch): what it has of a key (all of it, or an object
 * in progress and then each step of it), naming the other members of its swarm as they come. A
 * watcher that is a confirmed member joins the swarm of the key, so others hear of it. The node
 * getting an object from its origin shows each new chunk to one watcher first (super-seeding, see
 * Seeder in swarm.ts).
 */
export function watchPolicy(opts: WatchPolicyOptions): NonNullable<PeerServerOptions['watch']> {
  const { swarm } = opts;
  return (key: string, from: Holder | undefined, stream: WatchStream): boolean => {
    // A watcher joins the swarm of a key this node holds or is getting: of any other key the Watch
    // is answered NOT_FOUND, and remembering it would let a member grow the swarm table at will.
    const join = () => {
      if (from && opts.trusted(from)) swarm.join(key, from);
    };
    const peers = () => swarm.peersOf(key, from?.nodeId);
    const local = opts.lookup(key);
    if (local) {
      join();
      stream.write({ manifest: local, peers: peers() });
      stream.end();
      return true;
    }
    const progress = swarm.get(key);
    if (!progress || progress.ended) return false;
    join();
    const seeded = progress.seeder?.add((index) => stream.write({ have: [index] }));
    const have: number[] = seeded?.initial ?? [];
    if (!seeded) progress.have.forEach((h, i) => h && have.push(i));
    const digests = [...progress.digests];
    stream.write({ head: progress.head, firstDigest: 0, digests, have, peers: peers() });
    const stopJoins = swarm.onJoin(key, (holder) => {
      if (holder.nodeId !== from?.nodeId) stream.write({ peers: [holder] });
    });
    const stop = progress.subscribe((event) => {
      switch (event.kind) {
        case 'digests':
          stream.write({ firstDigest: event.first, digests: event.digests });
          break;
        case 'have':
          if (!seeded) stream.write({ have: [event.index] });
          break;
        case 'complete':
          stopJoins();
          stream.write({ manifest: event.manifest, peers: peers() });
          stream.end();
          break;
        case 'failed':
          stopJoins();
          if (nowhere(event.error)) stream.gone(event.error);
          else stream.fail(event.error);
          break;
      }
    });
    stream.onClose(() => {
      stop();
      stopJoins();
      seeded?.remove();
    });
    return true;
  };
}

/**
 * Whether getting an object failed because no one has it: every peer asked had let it go (or none
 * was left), or the origin answered 404. A watcher of such a download hears NOT_FOUND: a miss.
 */
function nowhere(error: Error): boolean {
  return error instanceof ObjectNotFoundError || (error instanceof PeerFetchError && error.gone);
}
