import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ControlEvent, MemberInfo } from '@edgemesh/contracts';
import type { ControlPlane, ControlState } from '../control/control-plane.ts';
import { createLogger } from '../telemetry/logger.ts';
import { FakeClock } from '../time/clock.ts';
import type { PeerTransport, PingResult } from '../transport/peer-transport.ts';
import { stubTransport } from '../transport/stub-transport.ts';
import {
  MAX_LOCAL_HEALTH,
  MAX_REVIVE_TRIES,
  MAX_TRIES_PER_MEMBER,
  FRESH_MIN_INTERVAL_MS,
  MAX_UNCONFIRMED,
  Membership,
  type MembershipTiming,
  NEW_LIFE_MIN_INTERVAL_MS,
  REFUTATIONS_PER_LIFE,
  REVIVE_EVERY_MS,
  REVIVE_TIMEOUT_MS,
} from './membership.ts';

/** Addresses and whether the node behind each answers. */
class Network {
  readonly nodes = new Map<
    string,
    {
      nodeId: string;
      zone: string;
      region: string;
      up: boolean;
      incarnation?: number;
      silent?: boolean;
      /** The answer waits for this (a slow link): what happens meanwhile is tested. */
      gate?: Promise<void>;
      /** The round trip its answers report (as the transport measures it); 1 ms when unset. */
      rttMs?: number;
      /** Its answers say their connection was set up for them (the round trip took the handshakes). */
      connecting?: boolean;
    }
  >();
  /** Probes asked of helpers (indirect probes), all nodes together. */
  indirectProbes = 0;
  /** The membership behind each address: a direct answer says what it knows of the caller. */
  readonly memberships = new Map<string, Membership>();
  async ping(address: string, signal?: AbortSignal): Promise<PingResult> {
    const node = this.nodes.get(address);
    if (node?.silent) return new Promise(() => undefined); // packets dropped: no answer, ever
    if (node?.gate) {
      // The caller stops waiting at its timeout; the answer itself is still on its way.
      const waited = signal ? waitOrAbort(node.gate, signal) : node.gate;
      await waited;
    }
    if (!node?.up) return Promise.reject(new Error(`${address} unreachable`));
    const { nodeId, zone, region, incarnation, connecting } = node;
    const rttMs = node.rttMs ?? 1;
    return {
      nodeId,
      zone,
      region,
      rttMs,
      ...(incarnation === undefined ? {} : { incarnation }),
      ...(connecting ? { connecting } : {}),
    };
  }
  /** The connections closed, all nodes together. */
  readonly closed = new Set<PeerTransport>();
  transport(from: string, info: MemberInfo): PeerTransport {
    const transport: PeerTransport = stubTransport(info.nodeId, info.grpc, {
      close: () => void this.closed.add(transport),
      ping: async (signal) => {
        if (!this.nodes.get(from)?.up) throw new Error('self down');
        const answer = await this.ping(info.grpc, signal);
        const caller = this.nodes.get(from)?.nodeId;
        const yours =
          caller === undefined ? undefined : this.memberships.get(info.grpc)?.incarnationOf(caller);
        return { ...answer, ...(yours === undefined ? {} : { yourIncarnation: yours }) };
      },
      probe: (target, signal) => {
        this.indirectProbes++;
        return this.nodes.get(info.grpc)?.up
          ? this.ping(target, signal)
          : Promise.reject(new Error('helper down'));
      },
    });
    return transport;
  }
}

/** `gate`, or a rejection once `signal` aborts (what a caller with a timeout sees of a slow answer). */
const waitOrAbort = (gate: Promise<void>, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal.aborted) return reject(new Error('timed out'));
    signal.addEventListener('abort', () => reject(new Error('timed out')), { once: true });
    gate.then(resolve, reject);
  });

/** An in-memory control plane: delivers to every other subscriber, unless switched off. */
class Bus {
  readonly planes: { plane: ControlPlane; handlers: ((e: ControlEvent) => void)[] }[] = [];
  up = true;
  sent: ControlEvent[] = [];
  plane(): ControlPlane {
    const entry = {
      plane: undefined as unknown as ControlPlane,
      handlers: [] as ((e: ControlEvent) => void)[],
    };
    entry.plane = {
      state: (): ControlState => (this.up ? 'connected' : 'disconnected'),
      publish: (event) => {
        if (!this.up) return;
        this.sent.push(event);
        for (const other of this.planes) if (other !== entry) for (const h of other.handlers) h(event);
      },
      onEvent: (h) => entry.handlers.push(h),
      onConnect: () => undefined,
      close: () => Promise.resolve(),
    };
    this.planes.push(entry);
    return entry.plane;
  }
}

/** Publishes, as node n`from` on `bus`, an announce of `member`, or a suspicion of `nodeId` at `incarnation`. */
const announceOn = (bus: Bus, from: number, member: MemberInfo) =>
  publishOn(bus, from, { type: 'member.announce', body: { member } });
const suspectOn = (bus: Bus, from: number, nodeId: string, incarnation: number) =>
  publishOn(bus, from, { type: 'member.suspect', body: { nodeId, incarnation } });
/** Publishes on `bus`, through node n`via`'s plane, `member`'s own announcement (a newcomer has no plane here). */
const announceAs = (bus: Bus, via: number, member: MemberInfo) =>
  bus.planes[via]!.plane.publish({
    v: 1,
    type: 'member.announce',
    mesh: 'm',
    from: member.nodeId,
    sentAtMs: 0,
    body: { member },
  });
const publishOn = (bus: Bus, from: number, event: Pick<ControlEvent, 'type' | 'body'>) =>
  bus.planes[from]!.plane.publish({
    v: 1,
    mesh: 'm',
    from: `n${from}`,
    sentAtMs: 0,
    ...event,
  } as ControlEvent);

const settle = async () => {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
};

function mesh(size: number, timing: Partial<MembershipTiming> = {}) {
  const network = new Network();
  const bus = new Bus();
  const clock = new FakeClock();
  const logger = createLogger({ level: 'silent', nodeId: 'test' });
  /** The restarts each node was told of, by node id. */
  const restarts: string[][] = Array.from({ length: size }, () => []);
  /** The members each node forgot, as "id@address". */
  const forgotten: string[][] = Array.from({ length: size }, () => []);
  /** How often each node told its listeners that who is alive changed. */
  const changes = Array.from({ length: size }, () => 0);
  /** The later lives each node took (onOwnLife). */
  const lives: number[][] = Array.from({ length: size }, () => []);
  /** Why each node ignored what it heard (onIgnored), in order. */
  const ignored: string[][] = Array.from({ length: size }, () => []);
  /** The addresses each node opened a connection to (connect), in order. */
  const connected: string[][] = Array.from({ length: size }, () => []);
  /**
   * Time on the nodes' monotonic clock: the fake clock's advances are time passing, except the
   * steps `stepClock` makes (a wall clock set, as NTP does).
   */
  const t0 = clock.now();
  let stepped = 0;
  const stepClock = (ms: number) => {
    clock.advance(ms);
    stepped += ms;
  };
  const nodes = Array.from({ length: size }, (_, i) => {
    const self: MemberInfo = {
      nodeId: `n${i}`,
      zone: `z${i % 3}`,
      region: 'r',
      grpc: `10.0.0.${i}:7481`,
      weight: 1,
      incarnation: 0,
    };
    network.nodes.set(self.grpc, { nodeId: self.nodeId, zone: self.zone, region: self.region, up: true });
    const membership = new Membership({
      mesh: 'm',
      self,
      control: bus.plane(),
      connect: (info) => {
        connected[i]!.push(info.grpc);
        return network.transport(self.grpc, info);
      },
      clock,
      logger,
      timing: { suspicionTimeoutMs: 1000, indirectProbes: 2, ...timing },
      random: () => 0.5,
      onRestarted: (nodeId) => restarts[i]!.push(nodeId),
      onForgotten: (nodeId, address) => forgotten[i]!.push(`${nodeId}@${address}`),
      onChange: () => changes[i]!++,
      onOwnLife: (life) => lives[i]!.push(life),
      onIgnored: (reason) => ignored[i]!.push(reason),
      elapsed: () => clock.now() - t0 - stepped,
    });
    network.memberships.set(self.grpc, membership);
    return membership;
  });
  for (const m of nodes) m.start({ timers: false });
  const alive = (m: Membership) =>
    m
      .alive()
      .map((x) => x.info.nodeId)
      .sort();
  /**
   * Cuts `address` off (no answer, and the control plane down with it, so no announcement comes)
   * until `from` counts it dead: a probe period, the suspicion timeout, another period.
   */
  const cutOffUntilDead = async (from: Membership, address: string) => {
    network.nodes.get(address)!.up = false;
    bus.up = false;
    from.tick();
    await settle();
    clock.advance(1000);
    from.tick();
    await settle();
  };
  return {
    network,
    bus,
    clock,
    nodes,
    alive,
    restarts,
    forgotten,
    changes,
    lives,
    ignored,
    connected,
    stepClock,
    cutOffUntilDead,
  };
}

describe('Membership', () => {
  it('learns members from announcements and uses them once they answer', async () => {
    const { nodes, alive } = mesh(4);
    await settle();
    assert.deepEqual(alive(nodes[0]!), ['n1', 'n2', 'n3']);
    assert.deepEqual(alive(nodes[3]!), ['n0', 'n1', 'n2']);
  });

  it('suspects, then declares dead, a member that stops answering; everyone stops choosing it', async () => {
    const { network, nodes, clock, alive } = mesh(5);
    await settle();
    network.nodes.get('10.0.0.4:7481')!.up = false;
    for (let t = 0; t < 5; t++) {
      for (const m of nodes.slice(0, 4)) m.tick();
      await settle();
    }
    // One detector publishes its suspicion; everyone checks for themselves.
    for (const m of nodes.slice(0, 4)) assert.ok(!alive(m).includes('n4'), 'not chosen once suspect');
    assert.ok(
      nodes.slice(0, 4).every((m) => m.all().find((x) => x.info.nodeId === 'n4')?.state === 'suspect'),
    );
    // The others answered "it does not answer": the fault is n4's, not theirs.
    for (const m of nodes.slice(0, 4)) assert.equal(m.localHealth, 0);
    clock.advance(1000);
    for (const m of nodes.slice(0, 4)) m.tick();
    await settle();
    assert.ok(nodes.slice(0, 4).every((m) => m.all().find((x) => x.info.nodeId === 'n4')?.state === 'dead'));

    // It comes back and announces: probed, answering, alive again.
    network.nodes.get('10.0.0.4:7481')!.up = true;
    nodes[4]!.announce();
    await settle();
    for (const m of nodes.slice(0, 4)) assert.ok(alive(m).includes('n4'));
  });

  it('goes on aging suspects and the dead when the clock is set back (not stuck until it catches up)', async () => {
    const { network, nodes, clock } = mesh(2, { deadRetentionMs: 60_000 });
    await settle();
    const n0 = nodes[0]!;
    const state = () => n0.all().find((m) => m.info.nodeId === 'n1')?.state;
    network.nodes.get('10.0.0.1:7481')!.up = false;
    n0.tick();
    await settle();
    assert.equal(state(), 'suspect');
    clock.advance(-3_600_000); // an hour back
    n0.tick();
    await settle();
    clock.advance(1000);
    n0.tick();
    await settle();
    assert.equal(state(), 'dead', 'a suspicion timeout after the jump');
    clock.advance(-3_600_000);
    n0.tick();
    clock.advance(60_000);
    n0.tick();
    await settle();
    assert.equal(state(), undefined, 'forgotten a retention after the jump');
  });

  it('refutes a suspicion of itself again after the clock is set back', async () => {
    const { bus, clock, nodes } = mesh(2, { probeIntervalMs: 500 });
    await settle();
    const self = () => bus.sent.filter((e) => e.from === 'n0' && e.type === 'member.announce').length;
    const incarnation = () => nodes[1]!.all().find((m) => m.info.nodeId === 'n0')!.info.incarnation;
    suspectOn(bus, 1, 'n0', 0);
    await settle();
    assert.equal(incarnation(), 1);
    clock.advance(-3_600_000);
    suspectOn(bus, 1, 'n0', 1);
    await settle();
    assert.equal(incarnation(), 2, `refuted again (${self()} announcements)`);
  });

  it('gives a member that restarts at the same address a fresh connection, and counts it alive at once', async () => {
    const { bus, nodes, alive } = mesh(2);
    await settle();
    const n0 = nodes[0]!;
    // n1 dies; n0's connection to it is stuck in a reconnect backoff (as grpc-js's is after refusals),
    // even once n1 answers again.
    const old = n0.all().find((m) => m.info.nodeId === 'n1')!;
    Object.assign(old.transport, { ping: () => Promise.reject(new Error('connection in backoff')) });
    bus.up = false; // n1 is down: nobody refutes the suspicion
    n0.tick();
    await settle();
    assert.ok(!alive(n0).includes('n1'), 'suspected');
    bus.up = true;
    // n1 is back, with a new life: its announce carries the incarnation of a later start.
    announceOn(bus, 1, { ...old.info, incarnation: old.info.incarnation + REFUTATIONS_PER_LIFE });
    await settle();
    const now = n0.all().find((m) => m.info.nodeId === 'n1')!;
    assert.notEqual(now.transport, old.transport, 'a fresh connection');
    assert.deepEqual(alive(n0), ['n1'], 'alive on its first answer, with no protocol period waited');
  });

  it('asks again for the copies of a member with a new life, not of one that only refuted a suspicion', async () => {
    const { bus, nodes, restarts } = mesh(2);
    await settle();
    const known = () => nodes[0]!.all().find((m) => m.info.nodeId === 'n1')!;
    const before = known();
    // A refutation: the same life, one more.
    announceOn(bus, 1, { ...before.info, incarnation: before.info.incarnation + 1 });
    await settle();
    assert.deepEqual(restarts[0], [], 'a refutation is no restart');
    assert.equal(known().transport, before.transport, 'an alive member keeps its connection');
    // A stale announcement from before the refutation lowers nothing...
    announceOn(bus, 1, { ...before.info });
    await settle();
    assert.equal(known().info.incarnation, before.info.incarnation + 1);
    // ...and a new life is a restart.
    announceOn(bus, 1, { ...before.info, incarnation: before.info.incarnation + REFUTATIONS_PER_LIFE });
    await settle();
    assert.deepEqual(restarts[0], ['n1']);
  });

  it('sees a restart in a member’s own answer when no announcement says so (the control plane is down)', async () => {
    const { network, bus, nodes, restarts } = mesh(3);
    await settle();
    bus.up = false;
    network.nodes.get('10.0.0.1:7481')!.incarnation = 1; // the same life as announced (0)
    await nodes[0]!.probe('n1');
    assert.deepEqual(restarts[0], []);
    network.nodes.get('10.0.0.1:7481')!.incarnation = REFUTATIONS_PER_LIFE; // it restarted
    await nodes[0]!.probe('n1');
    await nodes[0]!.probe('n1');
    assert.deepEqual(restarts[0], ['n1'], 'told once');
    // Through a helper, an answer says nothing of restarts (only the member's own counts).
    network.nodes.get('10.0.0.2:7481')!.incarnation = 5 * REFUTATIONS_PER_LIFE;
    const member = nodes[0]!.all().find((m) => m.info.nodeId === 'n2')!;
    Object.assign(member.transport, { ping: () => Promise.reject(new Error('path n0-n2 broken')) });
    await nodes[0]!.probe('n2');
    assert.deepEqual(restarts[0], ['n1']);
  });

  it('asks a member again for its copies at most once in NEW_LIFE_MIN_INTERVAL_MS (a liar claiming a new life per answer), the rest when the window ends', async () => {
    const { network, bus, clock, nodes, restarts } = mesh(2);
    await settle();
    const n1 = network.nodes.get('10.0.0.1:7481')!;
    const known = () => nodes[0]!.all().find((m) => m.info.nodeId === 'n1')!;
    // A new life in every ping answer and every announcement.
    for (let life = 1; life <= 5; life++) {
      n1.incarnation = life * REFUTATIONS_PER_LIFE;
      await nodes[0]!.probe('n1');
      announceOn(bus, 1, { ...known().info, incarnation: (100 + life) * REFUTATIONS_PER_LIFE });
      await settle();
      clock.advance(1000);
    }
    assert.deepEqual(restarts[0], ['n1'], 'one re-copy in the window');
    assert.equal(known().info.incarnation, 105 * REFUTATIONS_PER_LIFE, 'every life is known at once');
    nodes[0]!.tick();
    assert.deepEqual(restarts[0], ['n1'], 'the owed one waits for the window');
    clock.advance(NEW_LIFE_MIN_INTERVAL_MS);
    nodes[0]!.tick();
    nodes[0]!.tick();
    assert.deepEqual(restarts[0], ['n1', 'n1'], 'the owed re-copy, once, when the window ends');
  });

  it('counts a revived member that does not say its life in the same window', async () => {
    const { network, clock, nodes, restarts, cutOffUntilDead } = mesh(2);
    await settle();
    const n0 = nodes[0]!;
    for (let i = 0; i < 3; i++) {
      await cutOffUntilDead(n0, '10.0.0.1:7481');
      network.nodes.get('10.0.0.1:7481')!.up = true; // answers again, with no incarnation
      n0.tick();
      await settle();
    }
    assert.deepEqual(restarts[0], ['n1'], 'three revivals, one re-copy');
    clock.advance(NEW_LIFE_MIN_INTERVAL_MS);
    n0.tick();
    assert.deepEqual(restarts[0], ['n1', 'n1']);
  });

  it('refuses an implausible incarnation (beyond 2^53, or a life further ahead than clocks differ), and a clock set back ends the window', async () => {
    const { network, bus, clock, nodes, restarts } = mesh(2);
    await settle();
    const n1 = network.nodes.get('10.0.0.1:7481')!;
    const known = () => nodes[0]!.all().find((m) => m.info.nodeId === 'n1')!;
    const inAnHour = Math.floor((clock.now() + 3_600_000) / 1000) * REFUTATIONS_PER_LIFE;
    for (const incarnation of [2 ** 63, inAnHour]) {
      n1.incarnation = incarnation;
      await nodes[0]!.probe('n1');
      announceOn(bus, 1, { ...known().info, incarnation });
      await settle();
    }
    assert.deepEqual(restarts[0], []);
    assert.equal(known().info.incarnation, 0);
    n1.incarnation = REFUTATIONS_PER_LIFE;
    await nodes[0]!.probe('n1');
    assert.deepEqual(restarts[0], ['n1']);
    clock.advance(-120_000); // the clock is set back two minutes
    n1.incarnation = 2 * REFUTATIONS_PER_LIFE;
    await nodes[0]!.probe('n1');
    assert.deepEqual(restarts[0], ['n1', 'n1'], 'not held off for the two minutes');
  });

  it('lets a member move to another address at most once in NEW_LIFE_MIN_INTERVAL_MS (copies are kept by address)', async () => {
    const { network, bus, clock, nodes } = mesh(2);
    await settle();
    const known = () => nodes[0]!.all().find((m) => m.info.nodeId === 'n1')!;
    const home = known().info;
    network.nodes.set('10.0.0.9:7481', { ...network.nodes.get(home.grpc)! }); // n1 answers there too
    announceOn(bus, 1, { ...home, grpc: '10.0.0.9:7481' });
    await settle();
    assert.equal(known().info.grpc, '10.0.0.9:7481', 'moved');
    announceOn(bus, 1, home); // and back at once
    await settle();
    assert.equal(known().info.grpc, '10.0.0.9:7481', 'not back within the window');
    clock.advance(NEW_LIFE_MIN_INTERVAL_MS);
    announceOn(bus, 1, home);
    await settle();
    assert.equal(known().info.grpc, home.grpc, 'back after it');
  });

  it('raises an incarnation only on the member’s own claim, re-addresses a dead member only on its own word, and an unproven move starts no move window', async () => {
    const { bus, network, clock, nodes, restarts } = mesh(3);
    await settle();
    const n0 = nodes[0]!;
    const known = () => n0.all().find((m) => m.info.nodeId === 'n1')!;
    const home = known().info;
    announceOn(bus, 2, { ...home, incarnation: 7 * REFUTATIONS_PER_LIFE });
    await settle();
    assert.equal(known().info.incarnation, home.incarnation, 'n2 cannot set n1’s life');
    assert.deepEqual(restarts[0], []);
    // n1 dead here; n2 says it is elsewhere; n1's own announcement at home is taken at once.
    network.nodes.get(home.grpc)!.up = false;
    for (let i = 0; i < 10 && known().state !== 'dead'; i++) {
      n0.tick();
      await settle();
      clock.advance(1000);
    }
    assert.equal(known().state, 'dead');
    announceOn(bus, 2, { ...home, grpc: '10.0.0.8:7481' });
    await settle();
    assert.equal(known().info.grpc, home.grpc, 'n2 cannot re-address n1, dead or not');
    // n1's own word (nothing answers there), at its life now (it refuted the suspicions meanwhile).
    const now = nodes[1]!.self;
    announceOn(bus, 1, { ...now, grpc: '10.0.0.8:7481' });
    await settle();
    assert.equal(known().info.grpc, '10.0.0.8:7481');
    clock.advance(FRESH_MIN_INTERVAL_MS); // (a new address at most once a second)
    announceOn(bus, 1, now);
    await settle();
    assert.equal(known().info.grpc, home.grpc, 'not locked out by the claim');
  });

  it('counts a dead member’s answer at another address as a move: the next waits out the window, dead or alive (no flipping by dying in between)', async () => {
    const { bus, clock, network, nodes, forgotten, cutOffUntilDead } = mesh(2);
    await settle();
    const n0 = nodes[0]!;
    const known = () => n0.all().find((m) => m.info.nodeId === 'n1')!;
    const home = known().info;
    const away = '10.0.0.9:7481';
    await cutOffUntilDead(n0, home.grpc);
    assert.equal(known().state, 'dead');
    bus.up = true;
    network.nodes.set(away, { ...network.nodes.get(home.grpc)!, up: true });
    announceOn(bus, 1, { ...home, grpc: away });
    await settle();
    assert.equal(known().state, 'alive');
    assert.equal(known().info.grpc, away);
    assert.deepEqual(forgotten[0], [`n1@${home.grpc}`]);
    network.nodes.get(home.grpc)!.up = true;
    announceOn(bus, 1, home); // alive: and back at once
    await settle();
    assert.equal(known().info.grpc, away, 'not back within the window');
    await cutOffUntilDead(n0, away);
    assert.equal(known().state, 'dead');
    bus.up = true;
    announceOn(bus, 1, home); // dead: and back at once
    await settle();
    assert.equal(known().info.grpc, away, 'not by dying in between either');
    clock.advance(NEW_LIFE_MIN_INTERVAL_MS);
    announceOn(bus, 1, home);
    await settle();
    assert.equal(known().info.grpc, home.grpc, 'back after the window');
    assert.equal(known().state, 'alive');
    assert.deepEqual(forgotten[0], [`n1@${home.grpc}`, `n1@${away}`]);
  });

  it('connects to a new address a member claims at most once a second, answered or not (no reflection off every node)', async () => {
    const { bus, clock, network, nodes } = mesh(2);
    await settle();
    const connects: string[] = [];
    const transport = network.transport.bind(network);
    network.transport = (from, info) => {
      if (from === '10.0.0.0:7481') connects.push(info.grpc);
      return transport(from, info);
    };
    const victim = (i: number) => `192.0.2.1:${i % 2}`; // nothing answers there
    const liar = { ...nodes[1]!.self, nodeId: 'liar', grpc: victim(0) };
    // Its own announcements (signed by it), each naming another address.
    const own = (grpc: string) =>
      bus.planes[1]!.plane.publish({
        v: 1,
        mesh: 'm',
        from: 'liar',
        sentAtMs: 0,
        type: 'member.announce',
        body: { member: { ...liar, grpc } },
      });
    for (let i = 0; i < 100; i++) own(victim(i));
    await settle();
    // Its first address, and one new one in the second.
    assert.deepEqual(
      connects,
      [victim(0), victim(1)],
      `${connects.length} connections for 100 announcements`,
    );
    clock.advance(FRESH_MIN_INTERVAL_MS);
    own(victim(2));
    await settle();
    assert.deepEqual(connects.slice(2), [victim(2)], 'its next one after the second is taken');
  });

  it('takes no move from a replay of a member’s own older announcement (its old address), dead or alive', async () => {
    const { bus, network, nodes, clock, cutOffUntilDead } = mesh(2);
    await settle();
    const n0 = nodes[0]!;
    const known = () => n0.all().find((m) => m.info.nodeId === 'n1')!;
    const home = known().info;
    const old = { ...home, grpc: '10.0.0.8:7481', incarnation: 0 };
    network.nodes.set(old.grpc, { ...network.nodes.get(home.grpc)! }); // a relay to n1 there
    announceOn(bus, 1, { ...home, incarnation: 3 }); // a refutation: incarnation 3
    await settle();
    assert.equal(known().info.incarnation, 3);
    announceOn(bus, 1, old); // a replay (within the skew allowed) of one n1 signed before
    await settle();
    assert.equal(known().info.grpc, home.grpc, 'alive: not moved');
    clock.advance(NEW_LIFE_MIN_INTERVAL_MS);
    await cutOffUntilDead(n0, home.grpc);
    assert.equal(known().state, 'dead');
    bus.up = true;
    announceOn(bus, 1, old);
    await settle();
    assert.equal(known().info.grpc, home.grpc, 'dead: not moved either');
    assert.equal(known().info.incarnation, 3, 'nor its incarnation lowered');
    network.nodes.get(home.grpc)!.up = true; // the partition heals
    assert.equal(await n0.reviveNow(() => true), true, 'tried, and back, at its real address');
  });

  it('moves a confirmed member only on its own word, not on another’s (even to an address that answers as it), nor takes the life another claims', async () => {
    const { bus, network, nodes, restarts } = mesh(3);
    await settle();
    const known = () => nodes[0]!.all().find((m) => m.info.nodeId === 'n1')!;
    const home = known().info;
    network.nodes.set('10.0.0.9:7481', { ...network.nodes.get(home.grpc)! }); // n1 answers there
    announceOn(bus, 2, { ...home, grpc: '10.0.0.9:7481', incarnation: 7 * REFUTATIONS_PER_LIFE });
    await settle();
    assert.equal(known().info.grpc, home.grpc, 'n2 cannot move n1');
    assert.equal(known().info.incarnation, home.incarnation, 'n2 cannot set n1’s life');
    assert.deepEqual(restarts[0], []);
    announceOn(bus, 1, { ...home, grpc: '10.0.0.9:7481' }); // n1's own word
    await settle();
    assert.equal(known().info.grpc, '10.0.0.9:7481', 'moved: the address answered as n1');
  });

  it('answers a restarted member with its own announcement at once, so the newcomer meets it now', async () => {
    const { bus, nodes } = mesh(2);
    await settle();
    const old = nodes[0]!.all().find((m) => m.info.nodeId === 'n1')!;
    bus.sent.length = 0;
    announceOn(bus, 1, { ...old.info, incarnation: old.info.incarnation + REFUTATIONS_PER_LIFE });
    await settle();
    assert.ok(
      bus.sent.some((e) => e.type === 'member.announce' && e.from === 'n0'),
      'n0 announced itself to the restarted n1',
    );
  });

  it('revives a dead member that answers again, on a fresh connection, with no announcement (a healed partition)', async () => {
    const { network, nodes, alive, restarts, cutOffUntilDead } = mesh(2);
    await settle();
    const n0 = nodes[0]!;
    const old = n0.all().find((m) => m.info.nodeId === 'n1')!;
    // Cut off (the partition cuts the control plane too), and the old connection stays unusable (a
    // half-open TCP connection).
    Object.assign(old.transport, { ping: () => Promise.reject(new Error('connection stalled')) });
    await cutOffUntilDead(n0, '10.0.0.1:7481');
    assert.equal(n0.all().find((m) => m.info.nodeId === 'n1')?.state, 'dead');
    // Healed; the fresh connection's answer took its handshakes too (900 ms).
    Object.assign(network.nodes.get('10.0.0.1:7481')!, { up: true, rttMs: 900 });
    n0.tick();
    await settle();
    const now = n0.all().find((m) => m.info.nodeId === 'n1')!;
    assert.deepEqual(alive(n0), ['n1'], 'alive again within a protocol period');
    assert.notEqual(now.transport, old.transport, 'on a fresh connection');
    assert.equal(now.rttMs, undefined, 'the handshakes are no round trip of its');
    assert.deepEqual(restarts[0], ['n1'], 'its answer did not say which life: possibly restarted');
  });

  it('revives a dead member whose answer shows the same life without asking its copies again', async () => {
    const { network, nodes, alive, restarts, cutOffUntilDead } = mesh(2);
    await settle();
    const n0 = nodes[0]!;
    await cutOffUntilDead(n0, '10.0.0.1:7481');
    Object.assign(network.nodes.get('10.0.0.1:7481')!, { up: true, incarnation: 0 }); // a partition healed
    n0.tick();
    await settle();
    assert.deepEqual(alive(n0), ['n1']);
    assert.deepEqual(restarts[0], [], 'the same life: its copies are where they were');
  });

  it('tries dead members at once when asked (a miss, a message to a node not alive), at most once a period each', async () => {
    const { network, nodes, clock, alive, cutOffUntilDead } = mesh(3);
    await settle();
    const n0 = nodes[0]!;
    await cutOffUntilDead(n0, '10.0.0.1:7481');
    await cutOffUntilDead(n0, '10.0.0.2:7481');
    assert.deepEqual(alive(n0), []);
    const n1 = (info: MemberInfo) => info.nodeId === 'n1';
    assert.equal(await n0.reviveNow(n1), false, 'still cut off');
    network.nodes.get('10.0.0.1:7481')!.up = true; // healed, a moment after the last try
    assert.equal(await n0.reviveNow(n1), false, 'tried at most every 100 ms: not again yet');
    clock.advance(500);
    assert.equal(await n0.reviveNow(n1), true, 'the next period: tried, and back');
    assert.deepEqual(alive(n0), ['n1'], 'n2 was not tried: it is not named');
    clock.advance(500);
    assert.equal(await n0.reviveNow(() => true), false, 'n2, tried, is still down (n1 alive says nothing)');
    network.nodes.get('10.0.0.2:7481')!.up = true;
    clock.advance(500);
    assert.equal(await n0.reviveNow(() => true), true);
    assert.deepEqual(alive(n0), ['n1', 'n2']);
  });

  it('tries alongside a periodic retry that started before the heal (and will never answer)', async () => {
    const { network, nodes, alive, clock, cutOffUntilDead } = mesh(2);
    await settle();
    const n0 = nodes[0]!;
    await cutOffUntilDead(n0, '10.0.0.1:7481');
    network.nodes.get('10.0.0.1:7481')!.silent = true;
    clock.advance(REVIVE_EVERY_MS);
    n0.tick(); // the periodic retry: its packets are dropped
    await settle();
    Object.assign(network.nodes.get('10.0.0.1:7481')!, { up: true, silent: false }); // healed
    // A miss does not join the period's try (begun before the heal, its SYN dropped): a try of its own.
    assert.equal(await n0.reviveNow(() => true), true);
    assert.deepEqual(alive(n0), ['n1']);
  });

  it(
    'starts a periodic try each period, on a fresh connection, though earlier ones are still out (their SYNs were dropped), and waits for handshakes past the probe timeout',
    { timeout: 20_000 },
    async () => {
      const { network, nodes, alive, clock, cutOffUntilDead } = mesh(2, { probeTimeoutMs: 20 });
      await settle();
      const n0 = nodes[0]!;
      await cutOffUntilDead(n0, '10.0.0.1:7481');
      const n1 = network.nodes.get('10.0.0.1:7481')!;
      n1.silent = true;
      for (let i = 0; i < 3; i++) {
        clock.advance(500);
        n0.tick(); // each period's try: dropped, still waiting
        await settle();
      }
      // Healed. A fresh connection's answer takes longer than the probe timeout (TCP and TLS
      // handshakes first); real time, so that the try's own timeout is what decides.
      Object.assign(n1, { up: true, silent: false });
      let open = () => undefined as void;
      n1.gate = new Promise<void>((resolve) => (open = resolve));
      setTimeout(() => open(), 60);
      clock.advance(500);
      n0.tick();
      // Until it is alive, or the try's own timeout is past (timers fire in order: the answer's first).
      const until = Date.now() + REVIVE_TIMEOUT_MS + 500;
      while (!alive(n0).includes('n1') && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
      assert.deepEqual(alive(n0), ['n1'], 'revived by the try that began after the heal');
    },
  );

  it('keeps at most MAX_REVIVE_TRIES tries under way, whatever a burst of misses asks while many members are cut off', async () => {
    const size = MAX_REVIVE_TRIES + 16;
    const { bus, clock, network, nodes } = mesh(size);
    await settle();
    const n0 = nodes[0]!;
    const cut = [...network.nodes.values()].slice(1);
    for (const node of cut) node.up = false; // cut off
    bus.up = false;
    for (let t = 0; t < 3 * size && n0.all().some((m) => m.state !== 'dead'); t++) {
      clock.advance(500);
      n0.tick();
      await settle();
    }
    assert.equal(n0.alive().length, 0, 'all counted dead');
    let connects = 0;
    const transport = network.transport.bind(network);
    network.transport = (from, info) => {
      if (from === '10.0.0.0:7481') connects++;
      return transport(from, info);
    };
    for (const node of cut) node.silent = true; // and now their packets are dropped: tries stay out
    const out = () => connects;
    // Enough calls to ask for half as many tries again as the bound (each call tries 8 members).
    for (let i = 0; i < (1.5 * MAX_REVIVE_TRIES) / 8; i++) {
      clock.advance(REVIVE_EVERY_MS);
      await n0.reviveNow(() => true);
    }
    assert.equal(out(), MAX_REVIVE_TRIES, 'connections opened by the burst: up to the bound, no more');
  });

  it('confirms an announced member by its first answer though the handshakes made it later than the probe timeout', async () => {
    const { bus, network, nodes, alive, cutOffUntilDead } = mesh(2, { probeTimeoutMs: 20 });
    await settle();
    const n0 = nodes[0]!;
    const n1 = network.nodes.get('10.0.0.1:7481')!;
    await cutOffUntilDead(n0, '10.0.0.1:7481');
    // Back, and announcing itself: n0 learns it again on a new connection, whose first answer comes
    // after 60 ms of real time (past the 20 ms probe timeout: TCP and TLS handshakes first).
    n1.up = true;
    bus.up = true;
    let open = () => undefined as void;
    n1.gate = new Promise<void>((resolve) => (open = resolve));
    announceOn(bus, 1, { ...nodes[1]!.self });
    await settle();
    assert.equal(n0.all().find((m) => m.info.nodeId === 'n1')?.state, 'unconfirmed');
    await new Promise((r) => setTimeout(r, 40)); // past the 20 ms probe timeout, the answer comes
    open();
    const until = Date.now() + REVIVE_TIMEOUT_MS + 500;
    while (!alive(n0).includes('n1') && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(alive(n0), ['n1'], 'confirmed by that answer, not left for the next probe');
  });

  it('makes a miss wait for the probe of a member back by its own announcement (a restart), not answer at once', async () => {
    const { bus, network, nodes, cutOffUntilDead } = mesh(2, { probeTimeoutMs: 20 });
    await settle();
    const n0 = nodes[0]!;
    const n1 = network.nodes.get('10.0.0.1:7481')!;
    await cutOffUntilDead(n0, '10.0.0.1:7481');
    // Restarted: it announces its new life; n0's probe of it, on a new connection, is answered after
    // the handshakes (60 ms of real time).
    Object.assign(n1, { up: true, incarnation: REFUTATIONS_PER_LIFE });
    bus.up = true;
    let open = () => undefined as void;
    n1.gate = new Promise<void>((resolve) => (open = resolve));
    announceOn(bus, 1, { ...nodes[1]!.self, incarnation: REFUTATIONS_PER_LIFE });
    await settle();
    assert.equal(n0.all().find((m) => m.info.nodeId === 'n1')?.state, 'unconfirmed');
    // A message to n1 now (the exchange asks this before answering "no such node"); the answer comes
    // 40 ms later, within the miss's 250 ms (timers fire in order).
    const back = n0.reviveNow((info) => info.nodeId === 'n1');
    setTimeout(() => open(), 40);
    assert.equal(await back, true, 'waited for it, and it is back');
  });

  it('takes no round-trip sample from an answer whose connection was set up for it', async () => {
    const { network, nodes } = mesh(2);
    await settle();
    const n0 = nodes[0]!;
    const n1 = network.nodes.get('10.0.0.1:7481')!;
    const rtt = () => n0.all().find((m) => m.info.nodeId === 'n1')!.rttMs;
    n1.rttMs = 5;
    await n0.probe('n1');
    assert.equal(rtt(), 5);
    Object.assign(n1, { rttMs: 900, connecting: true }); // a reconnect: the handshakes' 900 ms
    await n0.probe('n1');
    assert.equal(rtt(), 5, 'the handshakes are no round trip of the member’s');
  });

  it('vouches for a source or holder another node names while it is alive or suspect (its own call proves it up), not dead nor at another address', async () => {
    const { network, bus, nodes, clock } = mesh(3, { probeTimeoutMs: 20 });
    await settle();
    const n0 = nodes[0]!;
    const n1 = network.nodes.get('10.0.0.1:7481')!;
    const state = () => n0.all().find((m) => m.info.nodeId === 'n1')!.state;
    assert.equal(n0.memberAt('n1', '10.0.0.1:7481')?.info.nodeId, 'n1');
    assert.equal(n0.memberAt('n1', '10.0.0.9:7481'), undefined, 'not at an address it never answered at');
    bus.up = false;
    n1.up = false; // its answers are late or lost (a loaded node): suspect
    await n0.probe('n1');
    assert.equal(state(), 'suspect');
    assert.equal(n0.memberAt('n1', '10.0.0.1:7481')?.info.nodeId, 'n1', 'suspect: still vouched for');
    clock.advance(1000);
    n0.tick();
    await settle();
    assert.equal(state(), 'dead');
    assert.equal(n0.memberAt('n1', '10.0.0.1:7481'), undefined, 'dead: no more');
  });

  it('keeps trying a member that healed while misses fill the cap with tries of members still cut off', async () => {
    const size = 22;
    const { bus, clock, network, nodes, alive } = mesh(size);
    await settle();
    const n0 = nodes[0]!;
    const others = [...network.nodes.values()].slice(1);
    for (const node of others) node.up = false;
    bus.up = false; // no announcement can bring anyone back: only tries
    for (let t = 0; t < 3 * size && n0.all().some((m) => m.state !== 'dead'); t++) {
      clock.advance(500);
      n0.tick();
      await settle();
    }
    const healed = others.at(-1)!;
    const cutOff = others.slice(0, -1);
    for (const node of cutOff) Object.assign(node, { up: true, silent: true }); // their packets dropped
    // Misses asking for the cut-off members, in bursts: their tries never end, and fill the cap.
    const cut = new Set(cutOff.map((n) => n.nodeId));
    for (let i = 0; i < 2 * MAX_REVIVE_TRIES; i++) {
      clock.advance(REVIVE_EVERY_MS);
      n0.reviveNow((info) => cut.has(info.nodeId)).catch(() => undefined);
    }
    healed.up = true;
    for (let t = 0; t < size && !alive(n0).includes(healed.nodeId); t++) {
      clock.advance(500);
      n0.tick(); // the period's tries: not held back by the misses' cap
      await settle();
    }
    assert.deepEqual(alive(n0), [healed.nodeId]);
  });

  it('revives a dead member on no other member’s word: a probe a hint brings asks nobody else', async () => {
    const { bus, clock, nodes, cutOffUntilDead } = mesh(3);
    await settle();
    const n0 = nodes[0]!;
    const state = () => n0.all().find((m) => m.info.nodeId === 'n1')!.state;
    await cutOffUntilDead(n0, '10.0.0.1:7481');
    for (let i = 0; i < 6 && state() !== 'dead'; i++) {
      clock.advance(1000); // (the round-robin may have probed n2 first)
      n0.tick();
      await settle();
    }
    assert.equal(state(), 'dead');
    // n2 (lying, or across an asymmetric partition) answers indirect probes of n1 as n1.
    const helper = n0.all().find((m) => m.info.nodeId === 'n2')!;
    Object.assign(helper.transport, {
      probe: () => Promise.resolve({ nodeId: 'n1', zone: 'z1', region: 'r', rttMs: 1 }),
    });
    bus.up = true;
    // Anyone may publish a suspicion, about anyone: n0 probes n1. (Not of n1's incarnation, which
    // n1 would refute with an announcement.)
    suspectOn(bus, 2, 'n1', 12345);
    await n0.probe('n1');
    assert.equal(state(), 'dead', 'only its own direct answer revives it');
    assert.equal(n0.memberAt('n1', '10.0.0.1:7481'), undefined);
  });

  it('revives a dead member only on its own answer: another node answering at its address does not', async () => {
    const { network, nodes, alive, cutOffUntilDead } = mesh(2);
    await settle();
    const n0 = nodes[0]!;
    await cutOffUntilDead(n0, '10.0.0.1:7481');
    assert.equal(n0.all().find((m) => m.info.nodeId === 'n1')?.state, 'dead');
    // Someone else now listens at n1's address (an impostor, or another node given the address).
    network.nodes.set('10.0.0.1:7481', { nodeId: 'mallory', zone: 'z0', region: 'r', up: true });
    for (let i = 0; i < 3; i++) {
      n0.tick();
      await settle();
    }
    assert.deepEqual(alive(n0), [], 'not revived on an answer as another node');
    assert.equal(n0.all().find((m) => m.info.nodeId === 'n1')?.state, 'dead');
  });

  it('counts itself joined once the members it heard of answer, and makes a lookup wait for it', async () => {
    const { nodes } = mesh(3);
    const n0 = nodes[0]!;
    // Started, heard of n1 and n2, not yet probed them (the probes answer on the next turns).
    assert.equal(n0.joined(), false);
    let waited: boolean | undefined;
    void n0.untilJoined().then((w) => (waited = w));
    await settle();
    assert.equal(n0.joined(), true);
    assert.equal(waited, true);
    assert.equal(await n0.untilJoined(), false, 'once joined, nothing waits');
  });

  it('counts a lone node joined after the join grace (a mesh of one answers nobody)', async () => {
    const lone = new Membership({
      mesh: 'm',
      self: { nodeId: 'solo', zone: 'z', region: 'r', grpc: '10.0.0.9:7481', weight: 1, incarnation: 0 },
      control: new Bus().plane(),
      connect: () => {
        throw new Error('nobody to connect to');
      },
      clock: new FakeClock(),
      logger: createLogger({ level: 'silent', nodeId: 'test' }),
      timing: { announceIntervalMs: 20, probeTimeoutMs: 10 },
    });
    lone.start({ timers: false });
    try {
      assert.equal(lone.joined(), false);
      assert.equal(await lone.untilJoined(), true, 'waited out the grace');
      assert.equal(lone.joined(), true);
    } finally {
      lone.close();
    }
  });

  it('keeps a member that answers through others though not directly (a one-way fault)', async () => {
    const { nodes, alive } = mesh(3);
    await settle();
    // n0 can no longer reach n2, but n1 can.
    const n0 = nodes[0]!;
    const member = n0.all().find((m) => m.info.nodeId === 'n2')!;
    Object.assign(member.transport, { ping: () => Promise.reject(new Error('path n0-n2 broken')) });
    await n0.probe('n2');
    assert.ok(alive(n0).includes('n2'), 'confirmed through n1');
  });

  it('admits a newcomer only on its own answer: a member that vouches for it through a probe is not believed', async () => {
    const { bus, nodes, alive } = mesh(3);
    await settle();
    // n1 lies: it says any address answers as whoever is asked about (an id nobody holds a certificate for).
    const n0 = nodes[0]!;
    const liar = n0.all().find((m) => m.info.nodeId === 'n1')!;
    Object.assign(liar.transport, {
      probe: () => Promise.resolve({ nodeId: 'phantom', zone: 'z', region: 'r', rttMs: 1 }),
    });
    announceAs(bus, 1, {
      nodeId: 'phantom',
      zone: 'z',
      region: 'r',
      grpc: '10.7.7.7:1',
      weight: 1000,
      incarnation: 0,
    });
    await settle();
    await n0.probe('phantom');
    assert.deepEqual(alive(n0), ['n1', 'n2'], 'the phantom is never used');
  });

  it('never uses a forged or stale announcement', async () => {
    const { bus, nodes, alive } = mesh(3);
    await settle();
    const forge = (member: MemberInfo) => announceAs(bus, 2, member);
    // Claims to be n1 at n2's address, and a node at an address nobody answers on.
    forge({ nodeId: 'ghost', zone: 'z', region: 'r', grpc: '10.0.0.2:7481', weight: 1, incarnation: 0 });
    forge({ nodeId: 'nobody', zone: 'z', region: 'r', grpc: '10.9.9.9:1', weight: 1, incarnation: 0 });
    forge({ nodeId: 'n1', zone: 'z', region: 'r', grpc: '10.9.9.9:2', weight: 1, incarnation: 0 }); // stale for n1
    await settle();
    assert.deepEqual(
      alive(nodes[0]!),
      ['n1', 'n2'],
      'a confirmed n1 keeps its address; ghosts are never used',
    );
    const n1 = nodes[0]!.all().find((m) => m.info.nodeId === 'n1')!;
    assert.equal(n1.info.grpc, '10.0.0.1:7481');
    // A flood of forgeries, each in its own name (filling the places takes as many identities), is capped.
    for (let i = 0; i < MAX_UNCONFIRMED + 50; i++) {
      forge({
        nodeId: `spam${i}`,
        zone: 'z',
        region: 'r',
        grpc: `10.8.0.${i % 250}:${1000 + i}`,
        weight: 1,
        incarnation: 0,
      });
    }
    await settle();
    assert.ok(nodes[0]!.all().length <= MAX_UNCONFIRMED + 3);
  });

  // The review's case: nothing sends members.snapshot, yet any node of the mesh could sign one
  // (EventSigner checks only that its sender signed it). 400 made-up members filled every place for
  // the unconfirmed, this node connected to 256 addresses the sender chose, and a real newcomer's
  // own announcement was refused as too-many-unconfirmed.
  it('refuses a snapshot from a member: it introduces nobody, and a real newcomer still gets in', async () => {
    const { bus, network, nodes, alive, ignored, connected } = mesh(3);
    await settle();
    const n0 = nodes[0]!;
    const before = connected[0]!.length;
    const invented = Array.from({ length: 400 }, (_, i): MemberInfo => ({
      nodeId: `made-up-${i}`,
      zone: 'z',
      region: 'r',
      grpc: `10.66.${i >> 8}.${i & 255}:7481`,
      weight: 1,
      incarnation: 0,
    }));
    publishOn(bus, 2, { type: 'members.snapshot', body: { members: invented } });
    await settle();
    assert.equal(n0.all().length, 2, 'nobody made up is taken in');
    assert.equal(connected[0]!.length, before, 'no connection to an address the sender chose');
    assert.deepEqual(ignored[0], ['members-snapshot']);
    network.nodes.set('10.0.0.5:7481', { nodeId: 'n5', zone: 'z2', region: 'r', up: true });
    announceAs(bus, 1, {
      nodeId: 'n5',
      zone: 'z2',
      region: 'r',
      grpc: '10.0.0.5:7481',
      weight: 1,
      incarnation: 0,
    });
    await settle();
    assert.deepEqual(alive(n0), ['n1', 'n2', 'n5'], 'the newcomer is admitted on its own word');
  });

  it('takes nobody another member announces: one sender cannot fill the places of the unconfirmed', async () => {
    const { bus, network, nodes, alive, ignored } = mesh(3);
    await settle();
    const n0 = nodes[0]!;
    for (let i = 0; i < MAX_UNCONFIRMED + 50; i++)
      announceOn(bus, 2, {
        nodeId: `other-${i}`,
        zone: 'z',
        region: 'r',
        grpc: `10.66.${i >> 8}.${i & 255}:7481`,
        weight: 1,
        incarnation: 0,
      });
    await settle();
    assert.equal(n0.all().length, 2);
    assert.ok(ignored[0]!.every((r) => r === 'about-another'));
    assert.equal(ignored[0].length, MAX_UNCONFIRMED + 50);
    network.nodes.set('10.0.0.5:7481', { nodeId: 'n5', zone: 'z2', region: 'r', up: true });
    announceAs(bus, 1, {
      nodeId: 'n5',
      zone: 'z2',
      region: 'r',
      grpc: '10.0.0.5:7481',
      weight: 1,
      incarnation: 0,
    });
    await settle();
    assert.deepEqual(alive(n0), ['n1', 'n2', 'n5']);
  });

  it('follows a member that really moved, once its new address answers as it', async () => {
    const { bus, network, nodes, alive } = mesh(3);
    await settle();
    network.nodes.get('10.0.0.2:7481')!.up = false;
    network.nodes.set('10.0.0.99:7481', { nodeId: 'n2', zone: 'z2', region: 'r', up: true });
    const moved: MemberInfo = {
      nodeId: 'n2',
      zone: 'z2',
      region: 'r',
      grpc: '10.0.0.99:7481',
      weight: 1,
      incarnation: 1,
    };
    bus.planes[2]!.plane.publish({
      v: 1,
      type: 'member.announce',
      mesh: 'm',
      from: 'n2',
      sentAtMs: 0,
      body: { member: moved },
    });
    await settle();
    assert.deepEqual(alive(nodes[0]!), ['n1', 'n2']);
    assert.equal(nodes[0]!.all().find((m) => m.info.nodeId === 'n2')!.info.grpc, '10.0.0.99:7481');
  });

  it('takes a verified move though the old address died while the new one was checked (the usual order of a real move)', async () => {
    const { bus, clock, network, nodes, forgotten, changes } = mesh(2);
    await settle();
    const n0 = nodes[0]!;
    let open = () => undefined as void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    network.nodes.set('10.0.0.99:7481', { nodeId: 'n1', zone: 'z1', region: 'r', up: true, gate });
    announceOn(bus, 1, {
      nodeId: 'n1',
      zone: 'z1',
      region: 'r',
      grpc: '10.0.0.99:7481',
      weight: 1,
      incarnation: 1,
    });
    await settle();
    // The old address stops answering while the new one's answer is on its way: n1 goes dead. (n1's
    // own node in this test still has the old address: it must not announce it.)
    network.nodes.get('10.0.0.1:7481')!.up = false;
    bus.up = false;
    const state = () => n0.all().find((m) => m.info.nodeId === 'n1')!.state;
    for (let i = 0; i < 5 && state() !== 'dead'; i++) {
      n0.tick();
      await settle();
      clock.advance(1000);
    }
    assert.equal(state(), 'dead');
    const heard = changes[0]!;
    open();
    await settle();
    assert.deepEqual(
      n0.alive().map((m) => m.info.grpc),
      ['10.0.0.99:7481'],
      'alive at its new address',
    );
    assert.deepEqual(forgotten[0], ['n1@10.0.0.1:7481'], 'the old address’s copies are no longer its');
    assert.equal(changes[0], heard + 1, 'its listeners (repair, placement) hear it is alive');
  });

  it('blames its own link when its probes go unanswered by the helpers too: waits longer, keeps its peers', async () => {
    const { bus, nodes, clock } = mesh(4, { probeTimeoutMs: 20 });
    await settle();
    bus.up = false; // no refutation gives n0 fresh connections meanwhile
    const n0 = nodes[0]!;
    // n0's uplink is saturated: nothing it sends is answered in time (the others are fine).
    let linkUp = false;
    const late: (() => void)[] = [];
    const answerAs = (address: string, signal?: AbortSignal): Promise<PingResult> => {
      const m = n0.all().find((x) => x.info.grpc === address)!;
      if (linkUp)
        return Promise.resolve({ nodeId: m.info.nodeId, zone: m.info.zone, region: m.info.region, rttMs: 1 });
      return new Promise((_r, reject) => {
        const fail = () => reject(new Error('no answer in time'));
        late.push(fail);
        signal?.addEventListener('abort', fail, { once: true });
      });
    };
    for (const m of n0.all())
      Object.assign(m.transport, {
        ping: (signal?: AbortSignal) => answerAs(m.info.grpc, signal),
        probe: (target: string, signal?: AbortSignal) => answerAs(target, signal),
      });
    const stateOf = (id: string) => n0.all().find((m) => m.info.nodeId === id)!.state;
    await n0.probe('n1');
    assert.equal(stateOf('n1'), 'suspect');
    assert.equal(n0.localHealth, 2, 'both helpers missed: +2');
    await n0.probe('n2');
    assert.equal(n0.localHealth, 3, 'the one alive helper (n3) missed too');
    // A suspicion now lasts (1 + 3) times as long: a node late itself does not declare its peers dead.
    clock.advance(1000);
    n0.tick();
    assert.deepEqual([stateOf('n1'), stateOf('n2')], ['suspect', 'suspect']);
    // Its link recovers (the probes the tick started get their answers through the helpers).
    linkUp = true;
    for (const fail of late.splice(0)) fail();
    await settle();
    assert.deepEqual([stateOf('n1'), stateOf('n2')], ['alive', 'alive']);
    // Each direct answer lowers the score.
    await n0.probe('n1');
    await n0.probe('n2');
    assert.equal(n0.localHealth, 1);
  });

  it('raises its local health when others suspect it, up to a bound; a flood of suspicions is one', async () => {
    const { bus, nodes, clock } = mesh(2);
    await settle();
    const n0 = nodes[0]!;
    for (let i = 0; i < 50; i++) suspectOn(bus, 1, 'n0', n0.self.incarnation);
    await settle();
    assert.deepEqual([n0.self.incarnation, n0.localHealth], [1, 1], 'one refutation a probe period');
    // A suspicion of an incarnation nobody could know of (a lying peer) is not answered.
    clock.advance(500);
    suspectOn(bus, 1, 'n0', 2 ** 50);
    await settle();
    assert.equal(n0.self.incarnation, 1);
    for (let i = 0; i < MAX_LOCAL_HEALTH + 3; i++) {
      clock.advance(500);
      suspectOn(bus, 1, 'n0', n0.self.incarnation);
      await settle();
    }
    assert.equal(n0.localHealth, MAX_LOCAL_HEALTH);
  });

  it('takes the next life when a member knows a later one of it (a restart on a new disk, the clock behind), so peers see the restart', async () => {
    const { bus, clock, nodes, restarts, lives } = mesh(2);
    await settle();
    const thenS = Math.floor(clock.now() / 1000);
    // n0's last life, 60 s ahead of its clock now, which n1 heard it announce (its own word).
    announceOn(bus, 0, { ...nodes[0]!.self, incarnation: (thenS + 60) * REFUTATIONS_PER_LIFE });
    await settle();
    assert.equal(nodes[1]!.incarnationOf('n0'), (thenS + 60) * REFUTATIONS_PER_LIFE);
    clock.advance(NEW_LIFE_MIN_INTERVAL_MS); // (that life's own window over)
    restarts[1]!.length = 0;
    // n0 restarted without its store folder: it starts at its clock, behind that life.
    const nowS = thenS + NEW_LIFE_MIN_INTERVAL_MS / 1000;
    Object.assign(nodes[0]!.self, { incarnation: nowS * REFUTATIONS_PER_LIFE });
    const sent = bus.sent.length;
    await nodes[0]!.probe('n1'); // n1's answer says what it knows of n0
    assert.equal(nodes[0]!.self.incarnation, (thenS + 61) * REFUTATIONS_PER_LIFE, 'the next life');
    assert.deepEqual(lives[0], [thenS + 61], 'kept (life.json)');
    assert.ok(
      bus.sent.slice(sent).some((e) => e.type === 'member.announce' && e.from === 'n0'),
      'announced at once',
    );
    await settle();
    assert.deepEqual(restarts[1], ['n0'], 'n1 sees the restart: what it copied to n0 is asked again');
    // Once is enough: the same answer again (n1 knows the life n0 now has) changes nothing.
    clock.advance(1000);
    await nodes[0]!.probe('n1');
    assert.deepEqual(lives[0], [thenS + 61]);
  });

  it('takes no later life a member claims for it beyond what life.ts follows (2.5 minutes ahead of its start), nor more than one a probe period', async () => {
    const { bus, clock, nodes, lives } = mesh(2);
    await settle();
    const nowS = Math.floor(clock.now() / 1000);
    const n1 = nodes[1]!;
    // n1 lies about what it knows of n0 (a member answers what it likes).
    const claim = (lifeS: number) => Object.assign(n1, { incarnationOf: () => lifeS * REFUTATIONS_PER_LIFE });
    claim(nowS + 150); // its next, nowS + 151, would be past the bound
    await nodes[0]!.probe('n1');
    assert.deepEqual(lives[0], []);
    claim(nowS + 10);
    await nodes[0]!.probe('n1');
    claim(nowS + 20); // within the same probe period
    await nodes[0]!.probe('n1');
    assert.deepEqual(lives[0], [nowS + 11]);
    clock.advance(500);
    await nodes[0]!.probe('n1');
    assert.deepEqual(lives[0], [nowS + 11, nowS + 21], 'one a period');
    // The bound does not move with the clock: a liar claiming a life just ahead of the clock, for
    // ever, gets nothing past this process's start plus 2.5 minutes.
    clock.advance(200_000);
    claim(nowS + 200 + 100);
    await nodes[0]!.probe('n1');
    assert.deepEqual(lives[0], [nowS + 11, nowS + 21]);
    void bus;
  });

  it('takes its last life back once its clock is set right after a start far behind (a device without a clock, then NTP)', async () => {
    const { bus, clock, nodes, lives, stepClock } = mesh(2);
    await settle();
    // Started 10 minutes behind; its last life, 5 minutes ago in true time, is what n1 knows of it.
    const startS = Math.floor(clock.now() / 1000);
    announceOn(bus, 0, { ...nodes[0]!.self, incarnation: (startS + 300) * REFUTATIONS_PER_LIFE });
    await settle();
    Object.assign(nodes[0]!.self, { incarnation: startS * REFUTATIONS_PER_LIFE });
    await nodes[0]!.probe('n1');
    assert.deepEqual(lives[0], [], 'too far ahead of the clock it started with');
    stepClock(600_000); // NTP sets the clock: the start, in true time, was 10 minutes later
    await nodes[0]!.probe('n1');
    assert.deepEqual(lives[0], [startS + 301]);
  });

  it('refutes suspicion of itself with a higher incarnation', async () => {
    const { bus, nodes } = mesh(2);
    await settle();
    suspectOn(bus, 1, 'n0', 0);
    await settle();
    assert.equal(nodes[0]!.self.incarnation, 1);
    const refutation = bus.sent.at(-1)!;
    assert.equal(refutation.type, 'member.announce');
  });

  it('keeps its members and goes on probing while the control plane is down', async () => {
    const { bus, network, nodes, clock, alive } = mesh(3);
    await settle();
    bus.up = false;
    network.nodes.get('10.0.0.2:7481')!.up = false;
    for (let t = 0; t < 4; t++) {
      nodes[0]!.tick();
      await settle();
    }
    clock.advance(1000);
    nodes[0]!.tick();
    await settle();
    assert.deepEqual(alive(nodes[0]!), ['n1'], 'detected without the control plane');
  });

  it('takes no malformed incarnation (a string, a float, NaN, Infinity, negative) from an answer, an announcement or a seed', async () => {
    // The control-plane schema refuses these on the wire; Membership checks again (seeds, ping
    // answers decoded from int64, any later path that skips the schema).
    const { network, bus, nodes, restarts } = mesh(2);
    await settle();
    const n0 = nodes[0]!;
    const n1 = network.nodes.get('10.0.0.1:7481')!;
    const known = () => n0.all().find((m) => m.info.nodeId === 'n1')!;
    const odd = [
      '3000000',
      4.5 * REFUTATIONS_PER_LIFE + 0.5,
      Number.NaN,
      Number.POSITIVE_INFINITY,
      -5 * REFUTATIONS_PER_LIFE,
    ] as unknown as number[];
    for (const incarnation of odd) {
      n1.incarnation = incarnation;
      await n0.probe('n1');
      announceOn(bus, 1, { ...known().info, incarnation });
      n0.learn({ ...known().info, incarnation });
      await settle();
    }
    assert.deepEqual(restarts[0], [], 'no re-copy on a malformed life');
    assert.equal(known().info.incarnation, 0, 'what is known is unchanged');
    assert.equal(known().state, 'alive');
  });

  it('takes no incarnation another member claims for a member it does not know yet: it does not even introduce it', async () => {
    const { bus, network, nodes, restarts } = mesh(3);
    await settle();
    const n0 = nodes[0]!;
    network.nodes.set('10.0.0.5:7481', { nodeId: 'n5', zone: 'z2', region: 'r', up: true });
    const n5: MemberInfo = {
      nodeId: 'n5',
      zone: 'z2',
      region: 'r',
      grpc: '10.0.0.5:7481',
      weight: 1,
      incarnation: 9 * REFUTATIONS_PER_LIFE,
    };
    publishOn(bus, 2, { type: 'members.snapshot', body: { members: [n5] } });
    announceOn(bus, 2, n5);
    await settle();
    const known = () => n0.all().find((m) => m.info.nodeId === 'n5');
    assert.equal(known(), undefined, 'n2 cannot introduce n5');
    // Its own (lower) life, announced (as its signed announcement arrives: from n5).
    n0.learn({ ...n5, incarnation: 2 * REFUTATIONS_PER_LIFE }, 'n5');
    await settle();
    assert.equal(known()?.state, 'alive', 'admitted on its own answer');
    assert.equal(known()?.info.incarnation, 2 * REFUTATIONS_PER_LIFE, 'at its own life, not n2’s');
    assert.deepEqual(restarts[0], []);
  });

  // Placement (overlay.ts ownerOrder) and the nearest-replica estimate would follow another member's word.
  it('keeps a confirmed member’s weight and coordinate against another member’s word', async () => {
    const { bus, nodes } = mesh(3);
    await settle();
    const known = () => nodes[0]!.all().find((m) => m.info.nodeId === 'n1')!;
    const home = known().info;
    const coordinate = { vec: [9, 9, 9, 9, 9, 9, 9, 9], height: 0, error: 0 };
    announceOn(bus, 2, { ...home, weight: 0, coordinate });
    await settle();
    assert.equal(known().info.weight, home.weight, 'n2 cannot take n1 out of placement');
    assert.equal(known().info.coordinate, home.coordinate, 'n2 cannot move n1 in the coordinate space');
  });

  // Any address that reaches a member answers as it: another spelling of its own, or a TCP relay a
  // liar runs (mTLS goes through it). A move another member reports would put the liar on the path
  // and, by the move window, keep the member's own announcements out for NEW_LIFE_MIN_INTERVAL_MS.
  it('tells when it forgets a member (dead past the retention, or revoked) the address it answered at, not for one that never answered', async () => {
    const { bus, clock, nodes, forgotten, cutOffUntilDead } = mesh(3, { deadRetentionMs: 60_000 });
    await settle();
    const n0 = nodes[0]!;
    await cutOffUntilDead(n0, '10.0.0.1:7481');
    bus.up = true;
    // An announcement that borrows n2's address, never confirmed: nothing went to it.
    announceAs(bus, 2, {
      nodeId: 'ghost',
      zone: 'z',
      region: 'r',
      grpc: '10.0.0.2:7481',
      weight: 1,
      incarnation: 0,
    });
    await settle();
    assert.ok(n0.all().some((m) => m.info.nodeId === 'ghost'));
    for (let i = 0; i < 2; i++) {
      clock.advance(60_000); // dead (once its suspicion ran out), then past the retention
      n0.tick();
      await settle();
    }
    assert.ok(!n0.all().some((m) => m.info.nodeId === 'n1' || m.info.nodeId === 'ghost'), 'both forgotten');
    assert.deepEqual(forgotten[0], ['n1@10.0.0.1:7481'], 'n1, not the ghost at n2’s address');
    n0.evict('n2');
    assert.deepEqual(forgotten[0], ['n1@10.0.0.1:7481', 'n2@10.0.0.2:7481']);
  });

  it('tells of a forgotten member’s address even when another node answers there now (a new identity at the same IP)', async () => {
    const { bus, clock, network, nodes, forgotten, cutOffUntilDead } = mesh(2, { deadRetentionMs: 60_000 });
    await settle();
    const n0 = nodes[0]!;
    await cutOffUntilDead(n0, '10.0.0.1:7481');
    bus.up = true;
    network.nodes.set('10.0.0.1:7481', { nodeId: 'n9', zone: 'z', region: 'r', up: true });
    n0.learn({ nodeId: 'n9', zone: 'z', region: 'r', grpc: '10.0.0.1:7481', weight: 1, incarnation: 0 });
    await settle();
    for (let i = 0; i < 2; i++) {
      clock.advance(60_000);
      n0.tick();
      await settle();
    }
    assert.deepEqual(
      n0.alive().map((m) => m.info.nodeId),
      ['n9'],
    );
    assert.deepEqual(forgotten[0], ['n1@10.0.0.1:7481'], 'n9 gets n1’s copies asked of it again');
  });

  it('gives a member claiming lives in a burst one fresh connection and one announcement a second, not one per claim', async () => {
    const { bus, clock, nodes } = mesh(2);
    await settle();
    const n0 = nodes[0]!;
    const connection = () => n0.all()[0]!.transport;
    const first = connection();
    const info = n0.all()[0]!.info;
    const announcesBy0 = () => bus.sent.filter((e) => e.from === 'n0' && e.type === 'member.announce').length;
    const before = announcesBy0();
    // Every life up to the clock skew allowed ahead, in a burst.
    announceOn(bus, 1, { ...info, incarnation: info.incarnation + REFUTATIONS_PER_LIFE });
    await settle();
    const second = connection();
    assert.notEqual(second, first, 'the first claim gets a fresh connection at once');
    for (let life = 2; life <= 300; life++) {
      announceOn(bus, 1, { ...info, incarnation: info.incarnation + life * REFUTATIONS_PER_LIFE });
      await settle();
    }
    assert.equal(connection(), second, 'the others in the same second do not');
    assert.equal(announcesBy0() - before, 1, 'one announcement');
    assert.equal(
      n0.all()[0]!.info.incarnation,
      info.incarnation + 300 * REFUTATIONS_PER_LIFE,
      'all claims count',
    );
    // The lives inside the window are owed one (the last may be real): given when the window ends.
    clock.advance(FRESH_MIN_INTERVAL_MS);
    nodes[0]!.tick();
    await settle();
    const third = connection();
    assert.notEqual(third, second, 'the owed fresh connection, when the window ends');
    assert.equal(announcesBy0() - before, 2, 'and the owed announcement');
    nodes[0]!.tick();
    await settle();
    assert.equal(connection(), third, 'once');
  });

  it('never holds back the fresh connection of a revival, even inside the window (a dead member cannot revive in bursts)', async () => {
    const { bus, clock, network, nodes, alive } = mesh(2, { suspicionTimeoutMs: 100 });
    await settle();
    const n0 = nodes[0]!;
    const n1 = network.nodes.get('10.0.0.1:7481')!;
    const info = n0.all()[0]!.info;
    n1.up = false;
    n0.tick();
    await settle();
    announceOn(bus, 1, { ...info, incarnation: info.incarnation + 1 }); // refutes: a fresh connection
    await settle();
    clock.advance(100);
    n0.tick();
    await settle();
    assert.equal(n0.all()[0]!.state, 'dead', 'dead within the window');
    const before = n0.all()[0]!.transport;
    n1.up = true;
    announceOn(bus, 1, { ...info, incarnation: info.incarnation + 1 });
    await settle();
    assert.notEqual(n0.all()[0]!.transport, before, 'a fresh connection');
    assert.deepEqual(alive(n0), ['n1'], 'alive on its answer, at once');
  });

  it('keeps what happened to a member while a probe of it was out (an eviction, a refutation)', async () => {
    const { network, nodes, restarts, alive } = mesh(2);
    await settle();
    const n0 = nodes[0]!;
    const n1 = network.nodes.get('10.0.0.1:7481')!;
    // A slow answer, and n1 is revoked while the probe waits for it: the answer does not bring it back.
    let open = () => undefined as void;
    n1.gate = new Promise<void>((resolve) => (open = resolve));
    n1.zone = 'elsewhere'; // an answer that changes something is written back
    n0.tick();
    await settle();
    n0.evict('n1');
    open();
    await settle();
    assert.ok(!n0.all().some((m) => m.info.nodeId === 'n1'), 'a revoked member stays out');
    assert.deepEqual(alive(n0), []);

    // Back (an announcement), alive. A probe's slow answer (a changed zone) is written back; what the
    // member said meanwhile (a refutation: a higher incarnation of the same life) stands.
    delete n1.gate;
    nodes[1]!.announce();
    await settle();
    assert.deepEqual(alive(n0), ['n1']);
    n1.gate = new Promise<void>((resolve) => (open = resolve));
    n1.zone = 'moved';
    n0.tick();
    await settle();
    const said = { ...n0.all()[0]!.info, incarnation: n0.all()[0]!.info.incarnation + 1 };
    n0.learn(said, 'n1');
    open();
    await settle();
    const now = n0.all()[0]!.info;
    assert.equal(now.zone, 'moved', 'the answer is taken');
    assert.equal(now.incarnation, said.incarnation, 'and the refutation kept');
    assert.deepEqual(restarts[0], [], 'no restart was seen');
  });

  it('takes a direct answer that comes back after the probe timeout: a late member is suspect, not dead', async () => {
    const { network, bus, nodes, alive, clock } = mesh(3, { probeTimeoutMs: 20, suspicionTimeoutMs: 1000 });
    await settle();
    bus.up = false; // no refutation gets through either: only the answer itself can clear n1
    const n0 = nodes[0]!;
    const state = () => n0.all().find((m) => m.info.nodeId === 'n1')?.state;
    // n1's answers queue behind what it uploads (a slow uplink): to n0, and to the others asked.
    let open = () => undefined as void;
    network.nodes.get('10.0.0.1:7481')!.gate = new Promise<void>((resolve) => (open = resolve));
    await n0.probe('n1'); // the direct ping's timeout, then the helpers' (real time, 20 ms and 40 ms)
    assert.equal(state(), 'suspect', 'nothing came back in time');
    open(); // its answer arrives, late but within the suspicion timeout
    await settle();
    assert.equal(state(), 'alive', 'the late answer clears the suspicion');
    assert.deepEqual(alive(n0), ['n1', 'n2']);
    clock.advance(1000);
    n0.tick();
    await settle();
    assert.equal(state(), 'alive', 'and it does not die at the end of the suspicion');
  });

  it('gives a member whose answers take long a probe timeout that fits its round trips (not one every answer misses)', async () => {
    const { network, bus, nodes } = mesh(3, { probeTimeoutMs: 20 });
    await settle();
    bus.up = false; // no refutation: only the probes decide
    const n0 = nodes[0]!;
    const n1 = network.nodes.get('10.0.0.1:7481')!;
    const state = () => n0.all().find((m) => m.info.nodeId === 'n1')!.state;
    // n1 sits behind a queueing uplink: its answers have taken about 150 ms.
    n1.rttMs = 150;
    for (let i = 0; i < 3; i++) await n0.probe('n1');
    assert.equal(state(), 'alive');
    // The next answer takes 60 ms of real time: past the configured 20 ms, well within what n1's
    // round trips earned it. Timers fire in order, so this holds on a loaded machine too.
    let open = () => undefined as void;
    n1.gate = new Promise<void>((resolve) => (open = resolve));
    setTimeout(() => open(), 60);
    const asked = network.indirectProbes;
    await n0.probe('n1');
    assert.equal(network.indirectProbes, asked, 'its own answer came in time: nobody else was asked');
    assert.equal(state(), 'alive');
  });

  it('probes for others with the configured timeout, not the longer one a member earned here (the asker would count it missed)', async () => {
    const { network, nodes } = mesh(3, { probeTimeoutMs: 20 });
    await settle();
    const n0 = nodes[0]!;
    const n1 = network.nodes.get('10.0.0.1:7481')!;
    n1.rttMs = 150; // n0 has learned that n1 answers slowly
    for (let i = 0; i < 3; i++) await n0.probe('n1');
    let open = () => undefined as void;
    n1.gate = new Promise<void>((resolve) => (open = resolve));
    setTimeout(() => open(), 60); // after the configured 20 ms, before what n1 earned at n0
    await assert.rejects(n0.probeFor('10.0.0.1:7481'), 'answered "no answer" within the configured timeout');
  });

  it('does not suspect a member whose own answer came while others were asked', async () => {
    const { network, bus, nodes } = mesh(3, { probeTimeoutMs: 20 });
    await settle();
    const n0 = nodes[0]!;
    const n1 = network.nodes.get('10.0.0.1:7481')!;
    // The helper takes 60 ms to say anything; n1's own answer comes at 30 ms, after n0's 20 ms.
    const helper = n0.all().find((m) => m.info.nodeId === 'n2')!;
    Object.assign(helper.transport, {
      probe: () => new Promise((_, reject) => setTimeout(() => reject(new Error('no answer')), 60)),
    });
    let open = () => undefined as void;
    n1.gate = new Promise<void>((resolve) => (open = resolve));
    setTimeout(() => open(), 30);
    const sent = bus.sent.length;
    await n0.probe('n1');
    assert.equal(n0.all().find((m) => m.info.nodeId === 'n1')!.state, 'alive');
    assert.deepEqual(
      bus.sent.slice(sent).filter((e) => e.type === 'member.suspect'),
      [],
      'no suspicion published',
    );
  });

  it('does not move a confirmed member to a relay another member reports', async () => {
    const { bus, network, nodes } = mesh(3);
    await settle();
    const known = () => nodes[0]!.all().find((m) => m.info.nodeId === 'n1')!;
    const home = known().info;
    network.nodes.set('10.0.0.2:9999', { ...network.nodes.get(home.grpc)! }); // n2's relay to n1
    announceOn(bus, 2, { ...home, grpc: '10.0.0.2:9999' });
    await settle();
    assert.equal(known().info.grpc, home.grpc, 'not moved onto the relay');
  });

  it('does not bring back a member revoked while a try to revive it was out', async () => {
    const { network, nodes, clock, cutOffUntilDead } = mesh(2);
    await settle();
    const n0 = nodes[0]!;
    await cutOffUntilDead(n0, '10.0.0.1:7481');
    // Healed, but the answer to the next try is slow; the member is revoked while it is out.
    const n1 = network.nodes.get('10.0.0.1:7481')!;
    let open = () => undefined as void;
    Object.assign(n1, { up: true, gate: new Promise<void>((resolve) => (open = resolve)) });
    clock.advance(500);
    n0.tick();
    await settle();
    n0.evict('n1');
    open();
    await settle();
    assert.ok(!n0.all().some((m) => m.info.nodeId === 'n1'), 'the revoked member stays out');
    assert.deepEqual(n0.alive(), []);
  });

  it('closes the connection of a member it forgets: revoked, or dead past the retention', async () => {
    const { network, nodes, clock, cutOffUntilDead } = mesh(3, { deadRetentionMs: 60_000 });
    await settle();
    const n0 = nodes[0]!;
    const of = (nodeId: string) => n0.all().find((m) => m.info.nodeId === nodeId)!.transport;
    const n2 = of('n2');
    n0.evict('n2');
    assert.ok(network.closed.has(n2), 'the revoked member’s connection was closed');
    await cutOffUntilDead(n0, '10.0.0.1:7481');
    const n1 = of('n1');
    assert.ok(!network.closed.has(n1));
    clock.advance(60_000);
    n0.tick();
    await settle();
    assert.ok(!n0.all().some((m) => m.info.nodeId === 'n1'), 'forgotten');
    assert.ok(network.closed.has(n1), 'the forgotten member’s connection was closed');
  });

  it('keeps at most MAX_TRIES_PER_MEMBER tries of one member under way, periodic and asked for together', async () => {
    const { network, nodes, clock, connected, cutOffUntilDead } = mesh(2);
    await settle();
    const n0 = nodes[0]!;
    await cutOffUntilDead(n0, '10.0.0.1:7481');
    network.nodes.get('10.0.0.1:7481')!.silent = true; // its packets dropped: every try stays out
    const before = connected[0]!.length;
    for (let i = 0; i < 3 * MAX_TRIES_PER_MEMBER; i++) {
      clock.advance(REVIVE_EVERY_MS);
      if (i % 2 === 0) n0.tick();
      await n0.reviveNow(() => true, 1);
    }
    const tries = connected[0]!.slice(before);
    assert.ok(
      tries.every((a) => a === '10.0.0.1:7481'),
      tries.join(' '),
    );
    assert.equal(tries.length, MAX_TRIES_PER_MEMBER, 'fresh connections to the member: up to the bound');
  });

  it('takes at most MAX_UNCONFIRMED members not yet confirmed, each on its own word', async () => {
    const { bus, nodes, ignored } = mesh(2);
    await settle();
    const n0 = nodes[0]!;
    // Newcomers that announce themselves and never answer (nothing at their addresses).
    for (let i = 0; i <= MAX_UNCONFIRMED; i++)
      announceAs(bus, 1, {
        nodeId: `new-${i}`,
        zone: 'z',
        region: 'r',
        grpc: `10.66.${i >> 8}.${i & 255}:7481`,
        weight: 1,
        incarnation: 0,
      });
    await settle();
    assert.equal(n0.all().filter((m) => m.state === 'unconfirmed').length, MAX_UNCONFIRMED);
    assert.ok(!n0.all().some((m) => m.info.nodeId === `new-${MAX_UNCONFIRMED}`), 'the one past the bound');
    assert.equal(ignored[0]!.filter((r) => r === 'too-many-unconfirmed').length, 1);
  });
});
