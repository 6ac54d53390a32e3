import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type AgentProcess, type PlaceOptions, startAgentProcess } from './agent-process.ts';

const DELAY_LINE = fileURLToPath(new URL('./geo-lab/delay-line.py', import.meta.url));
/** Large frames: a tenth of the packets a user-space delay line must move at a 1500-byte MTU. */
const MTU = 65000;

/** One emulated host: a network namespace with one address on the lab network. */
export interface LabHost {
  name: string;
  netns: string;
  ip: string;
  region: string;
  zone: string;
}

/**
 * A few regions on network namespaces. Hosts of a region share a bridge; each region's bridge meets
 * the core bridge through a delay line (a user-space frame forwarder, delay-line.py: this kernel has
 * no netem), so traffic between regions crosses two of them (round trip 4 x delayMs) and traffic
 * within a region none. The core holds a control-plane host (`services`, for nats-server) and a
 * veth to this process's namespace at `hostIp`, so tests reach every host.
 */
export interface GeoLab {
  hosts: LabHost[];
  services: LabHost;
  hostIp: string;
  delayMs: number;
  close(): void;
}

export interface GeoLabOptions {
  regions: number;
  /** Zone of each host within its region, by position: e.g. ['a', 'a', 'b', 'c']. */
  zones: string[];
  /** One way, per delay line. */
  delayMs: number;
  /** Told when another lab holds the machine's lab lock and this one waits for it. */
  onWaiting?: () => void;
}

const has = (cmd: string, args: string[]) => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;

/** Why the geo lab cannot run here, or undefined when it can (root, ip, ethtool, python3, netns). */
export function geoLabUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'the geo lab needs root (network namespaces)';
  if (!has('ip', ['-V'])) return 'iproute2 (ip) is not installed';
  if (!has('ethtool', ['--version'])) return 'ethtool is not installed (apt-get install ethtool)';
  if (!has('python3', ['--version'])) return 'python3 is not installed (the delay line)';
  const probe = `emprobe${randomBytes(3).toString('hex')}`;
  if (!has('ip', ['netns', 'add', probe])) return 'cannot create network namespaces here';
  has('ip', ['netns', 'del', probe]);
  return undefined;
}

/**
 * Labs share their addresses (198.18.0.0/24 and the host's route to it), so one runs on a machine at
 * a time. The lock is an abstract Unix socket (Linux), so it is per network namespace: labs are
 * started from the host's, as tests and benchmarks do. The kernel frees it when its holder exits,
 * however it exits, so a lab killed with -9 leaves no stale lock; waiters connect to it and learn of
 * its release when the connection closes.
 */
const LAB_LOCK = '\0edgemesh-geo-lab';
/** What a lab names (namespaces `em<4 hex><role>`, and the host's veth `em<4 hex>H`). */
const LAB_NAME = /^em[0-9a-f]{4}(core|svc|r\d+|d\d+|n\d+|H)$/;

/** How long a lab waits for the one before it (the full chaos suite holds it about 7 minutes). */
const LAB_LOCK_WAIT_MS = 20 * 60_000;

async function holdLabLock(onWaiting?: () => void): Promise<() => void> {
  const giveUpAt = performance.now() + LAB_LOCK_WAIT_MS;
  let told = false;
  for (;;) {
    const waiters = new Set<Socket>();
    const server: Server = createServer((socket) => {
      socket.unref();
      socket.on('error', () => undefined);
      waiters.add(socket);
    });
    const taken = await new Promise<boolean>((resolve, reject) => {
      server.once('error', (error: NodeJS.ErrnoException) =>
        error.code === 'EADDRINUSE' ? resolve(false) : reject(error),
      );
      server.listen(LAB_LOCK, () => resolve(true));
    });
    if (taken) {
      server.unref();
      return () => {
        if (!server.listening) return;
        server.close();
        for (const socket of waiters) socket.destroy(); // wakes the labs waiting
      };
    }
    // Held: wait until its holder lets go (or dies), then try again.
    if (!told) {
      told = true;
      console.log('# geo lab: another lab runs on this machine; waiting for it to finish');
      onWaiting?.();
    }
    const left = giveUpAt - performance.now();
    if (left <= 0) throw new Error(`another geo lab held the lock for ${LAB_LOCK_WAIT_MS / 60_000} minutes`);
    await new Promise<void>((resolve) => {
      const socket = connect(LAB_LOCK);
      socket.setTimeout(left, () => socket.destroy());
      socket.on('error', () => resolve());
      socket.on('close', () => resolve());
      socket.resume();
    });
  }
}

/**
 * Removes what labs before this one left (a lab killed with -9 cannot clean up): with the lock held,
 * every lab-named namespace and host link is a leftover, and its address would shadow this lab's.
 */
export function removeLabLeftovers(): string[] {
  const names = (out: string, pattern: RegExp) =>
    out
      .split('\n')
      .map((line) => pattern.exec(line)?.[1])
      .filter((n): n is string => n !== undefined && LAB_NAME.test(n));
  const ipOut = (...args: string[]) => spawnSync('ip', args, { encoding: 'utf8' }).stdout ?? '';
  const links = names(ipOut('-o', 'link', 'show'), /^\d+:\s+([^:@\s]+)/);
  const namespaces = names(ipOut('netns', 'list'), /^(\S+)/);
  for (const link of links) spawnSync('ip', ['link', 'del', link], { stdio: 'ignore' });
  for (const ns of namespaces) {
    // Its processes first (agents, nats-server, a delay line orphaned by the kill): they would keep
    // the namespace, and its links, alive after its name is gone.
    for (const pid of ipOut('netns', 'pids', ns)
      .split('\n')
      .map(Number)
      .filter((n) => n > 0))
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  }
  return [...links, ...namespaces];
}

export async function startGeoLab(opts: GeoLabOptions): Promise<GeoLab> {
  const release = await holdLabLock(opts.onWaiting);
  const stale = removeLabLeftovers();
  if (stale.length > 0) console.log(`# geo lab: removed ${stale.length} leftovers of an earlier lab`);
  const p = `em${randomBytes(2).toString('hex')}`; // short: interface names are at most 15 bytes
  const namespaces: string[] = [];
  const lines: ChildProcess[] = [];
  const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const inNs = (ns: string, cmd: string, ...args: string[]) =>
    execFileSync('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  const netns = (name: string) => {
    ip('netns', 'add', name);
    namespaces.push(name);
    ip('-n', name, 'link', 'set', 'lo', 'up');
    inNs(name, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1');
    return name;
  };
  const bridge = (ns: string) => {
    ip('-n', ns, 'link', 'add', 'br0', 'mtu', String(MTU), 'type', 'bridge');
    ip('-n', ns, 'link', 'set', 'br0', 'up');
  };
  const veth = (aNs: string | undefined, a: string, bNs: string, b: string) =>
    ip(
      'link',
      'add',
      a,
      ...(aNs ? ['netns', aNs] : []),
      'mtu',
      String(MTU),
      'type',
      'veth',
      'peer',
      'name',
      b,
      'netns',
      bNs,
      'mtu',
      String(MTU),
    );
  const plugHost = (ns: string, bridgeNs: string, outer: string, addr: string) => {
    veth(ns, 'eth0', bridgeNs, outer);
    ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0');
    ip('-n', ns, 'link', 'set', 'eth0', 'up');
    inNs(ns, 'ethtool', '-K', 'eth0', 'tx', 'off'); // else TCP through the delay line times out
    ip('-n', bridgeNs, 'link', 'set', outer, 'master', 'br0', 'up');
  };
  const close = () => {
    for (const line of lines) line.kill('SIGTERM');
    // Its own, not left to the core namespace's teardown (the kernel does that later, asynchronously).
    spawnSync('ip', ['link', 'del', `${p}H`], { stdio: 'ignore' });
    for (const ns of namespaces.reverse()) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    namespaces.length = 0;
    release();
  };
  process.once('exit', close);
  try {
    const core = netns(`${p}core`);
    bridge(core);
    // This process's way in.
    veth(undefined, `${p}H`, core, `${p}G`);
    ip('addr', 'add', '198.18.0.1/24', 'dev', `${p}H`);
    ip('link', 'set', `${p}H`, 'up');
    execFileSync('ethtool', ['-K', `${p}H`, 'tx', 'off'], { stdio: 'ignore' });
    ip('-n', core, 'link', 'set', `${p}G`, 'master', 'br0', 'up');
    const services: LabHost = {
      name: 'services',
      netns: netns(`${p}svc`),
      ip: '198.18.0.2',
      region: '',
      zone: '',
    };
    plugHost(services.netns, core, `${p}S`, services.ip);

    const hosts: LabHost[] = [];
    for (let r = 0; r < opts.regions; r++) {
      const region = netns(`${p}r${r}`);
      bridge(region);
      const delay = netns(`${p}d${r}`);
      veth(delay, 'toregion', region, `${p}R${r}`);
      veth(delay, 'tocore', core, `${p}C${r}`);
      ip('-n', region, 'link', 'set', `${p}R${r}`, 'master', 'br0', 'up');
      ip('-n', core, 'link', 'set', `${p}C${r}`, 'master', 'br0', 'up');
      for (const dev of ['toregion', 'tocore']) ip('-n', delay, 'link', 'set', dev, 'up', 'promisc', 'on');
      lines.push(await startDelayLine(delay, opts.delayMs));
      opts.zones.forEach((zone) => {
        const i = hosts.length;
        const host: LabHost = {
          name: `n${i}`,
          netns: netns(`${p}n${i}`),
          ip: `198.18.0.${10 + i}`,
          region: `region-${r}`,
          zone: `region-${r}-${zone}`,
        };
        plugHost(host.netns, region, `${p}h${i}`, host.ip);
        hosts.push(host);
      });
    }
    return {
      hosts,
      services,
      hostIp: '198.18.0.1',
      delayMs: opts.delayMs,
      close: () => {
        process.off('exit', close);
        close();
      },
    };
  } catch (error) {
    close();
    throw new Error(`geo lab set-up failed: ${(error as Error).message}`, { cause: error });
  }
}

async function startDelayLine(ns: string, delayMs: number): Promise<ChildProcess> {
  const child = spawn(
    'ip',
    ['netns', 'exec', ns, 'python3', DELAY_LINE, 'toregion', 'tocore', String(delayMs)],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const errors: string[] = [];
  child.stderr.on('data', (d) => errors.push(String(d)));
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (line.includes('delay line ready')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`delay line exited with ${code}: ${errors.join('')}`)));
  });
  return child;
}

/** The flags of the agent on lab host `h`: labelled with its region and zone, on the nats-server at `natsUrl`. */
export function labAgentArgs(h: LabHost, opts: { dir: string; mesh: string; natsUrl: string }): string[] {
  return [
    ...['--node-id', h.name, '--region', h.region, '--zone', h.zone, '--store.dir', join(opts.dir, h.name)],
    ...['--mesh', opts.mesh, '--control-plane.servers', opts.natsUrl, '--store.scrub-on-start', 'false'],
  ];
}

/**
 * An agent on every host of `lab` (labAgentArgs), with `args` added; resolves once all are up (one
 * at a time: they share two cores).
 */
export async function startLabAgents(
  lab: GeoLab,
  opts: { dir: string; mesh: string; natsUrl: string; args?: string[]; place?: PlaceOptions },
): Promise<AgentProcess[]> {
  const agents: AgentProcess[] = [];
  try {
    for (const h of lab.hosts) {
      agents.push(
        await startAgentProcess([...labAgentArgs(h, opts), ...(opts.args ?? [])], 30_000, {
          ...opts.place,
          netns: h.netns,
          host: h.ip,
        }),
      );
    }
  } catch (error) {
    await Promise.all(agents.map((a) => a.stop('SIGKILL')));
    throw error;
  }
  return agents;
}

/** Why the lab's faults (partition, limitRate) cannot run here, or undefined when they can. */
export function labFaultsUnavailable(): string | undefined {
  if (!has('iptables', ['--version'])) return 'iptables is not installed (a partition drops packets)';
  if (!has('tc', ['-V']))
    return 'tc (iproute2) is not installed (a slow peer is an htb class with a tbf qdisc)';
  return undefined;
}

const run = (ns: string, cmd: string, ...args: string[]) =>
  execFileSync('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });

/**
 * Partitions `cut` from the rest of the lab (the other hosts and the services host): each side
 * silently drops what comes from the other (iptables INPUT rules, so senders see a network that
 * went quiet, not an error). The test process (lab.hostIp) still reaches every host, as a workload
 * on the node would. Returns the heal.
 */
export function partition(lab: GeoLab, cut: readonly LabHost[]): () => void {
  const inside = new Set(cut.map((h) => h.name));
  const rest = [...lab.hosts.filter((h) => !inside.has(h.name)), lab.services];
  const drop = (at: LabHost, from: readonly LabHost[]) => {
    for (const h of from) run(at.netns, 'iptables', '-A', 'INPUT', '-s', h.ip, '-j', 'DROP');
  };
  for (const h of cut) drop(h, rest);
  for (const h of rest) drop(h, cut);
  return () => {
    for (const h of [...cut, ...rest]) run(h.netns, 'iptables', '-F', 'INPUT');
  };
}

/**
 * Makes `host` a slow peer: what it sends to other lab hosts leaves at most `bytesPerSecond` (a tbf
 * qdisc under an htb class on its interface; the lab's large frames need a burst of several of
 * them). What it sends to `exempt` (the test process, standing for programs on the host itself,
 * which reach their agent without crossing its uplink) is not limited. Returns the heal.
 */
export function limitRate(host: LabHost, bytesPerSecond: number, exempt?: string): () => void {
  const tc = (line: string) => run(host.netns, 'tc', ...line.split(' '));
  const rate = `${bytesPerSecond * 8}bit`;
  const burst = 4 * MTU;
  const heal = () => tc('qdisc del dev eth0 root');
  tc('qdisc add dev eth0 root handle 1: htb default 20');
  try {
    // The unlimited class, for `exempt`: far above anything this machine moves (htb needs a rate).
    tc('class add dev eth0 parent 1: classid 1:10 htb rate 100gbit quantum 200000');
    // htb's own burst and cburst as the tbf's (its default cburst is under one of the lab's frames).
    tc(
      `class add dev eth0 parent 1: classid 1:20 htb rate ${rate} burst ${burst} cburst ${burst} quantum ${MTU}`,
    );
    tc(`qdisc add dev eth0 parent 1:20 handle 20: tbf rate ${rate} burst ${burst} latency 200ms`);
    if (exempt)
      tc(`filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst ${exempt}/32 flowid 1:10`);
  } catch (error) {
    heal(); // a half-made limit is not left behind
    throw error;
  }
  return heal;
}
