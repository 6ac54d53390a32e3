import { randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

/** The repository root: the build context of the real Dockerfile. */
export const ROOT = resolve(import.meta.dirname, '..', '..');
/** The tags the e2e suites build: the repository's image, and NATS from this host's nats-server. */
export const EDGEMESH_IMAGE = 'edgemesh:e2e';
export const NATS_IMAGE = 'edgemesh-e2e/nats-server:host';

/**
 * testcontainers on this kind of machine: its reaper image cannot be pulled (so every suite stops
 * its own containers), and the VM has /.dockerenv, which would make it look for a gateway with yet
 * another image. Call before importing testcontainers.
 */
export function useLocalEngine(): void {
  process.env.TESTCONTAINERS_RYUK_DISABLED ??= 'true';
  process.env.TESTCONTAINERS_HOST_OVERRIDE ??= 'localhost';
}

/** The base image the Dockerfile names; made locally where it cannot be pulled. */
export const NODE_BASE = 'node:24-bookworm-slim';
const MAKE_BASE = join(import.meta.dirname, 'make-base-images.sh');

const run = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: 'utf8' });
const found = (cmd: string) => !run('sh', ['-c', `command -v ${cmd}`]).status;

export const hasImage = (name: string) => run('docker', ['image', 'inspect', name]).status === 0;

/**
 * Tags `source` as `target` in the engine. The function it returns puts `target` back as it was: on
 * the image it named before, or untagged when it named none.
 */
export function tagImage(source: string, target: string): () => void {
  const engine = (args: string[]) => {
    const r = run('docker', args);
    if (r.status !== 0) throw new Error(`docker ${args.join(' ')}: ${r.stderr || String(r.error)}`);
  };
  const before = run('docker', ['image', 'inspect', '--format', '{{.Id}}', target]);
  const previous = before.status === 0 ? before.stdout.trim() : undefined;
  engine(['tag', source, target]);
  return () => engine(previous ? ['tag', previous, target] : ['rmi', target]);
}

/** Why the container suites cannot run on this machine, or undefined when they can. */
export function containersUnavailable(): string | undefined {
  const info = run('docker', ['info']);
  if (info.error || info.status !== 0)
    return 'no container engine (docker info failed; .ci/run installs docker.io and starts dockerd)';
  if (!hasImage(NODE_BASE)) {
    if (process.getuid?.() !== 0)
      return `${NODE_BASE} is not in the engine, and making it locally needs root (debootstrap)`;
    if (!found('debootstrap'))
      return `${NODE_BASE} is not in the engine, and debootstrap (to make it) is not installed`;
  }
  if (!found('nats-server')) return 'nats-server is not installed (the NATS container is made from it)';
  return undefined;
}

/**
 * The folder of the npm that runs this test (`npm test` says where its CLI is), else of the one
 * `npm root -g` names. Not `npm root -g` first: under Node 24 from the `node` package (its bin
 * folder first on PATH, as many run it here) that names a folder inside node_modules/node,
 * where no npm is. A folder counts only if it holds npm's CLI (pnpm and yarn set `npm_execpath`
 * to their own), since the image made from it is kept for every later run.
 */
function npmPackage(): string {
  const isNpm = (dir: string) => existsSync(join(dir, 'bin', 'npm-cli.js'));
  const cli = process.env.npm_execpath; // <npm>/bin/npm-cli.js
  if (cli && isNpm(resolve(cli, '..', '..'))) return resolve(cli, '..', '..');
  const root = run('npm', ['root', '-g']).stdout?.trim();
  const global = root ? resolve(root, 'npm') : undefined;
  if (global && isNpm(global)) return global;
  throw new Error(
    `no npm to put in ${NODE_BASE} (npm_execpath ${cli ?? 'unset'}, npm root -g ${root ?? 'failed'})`,
  );
}

/**
 * Makes the official base images the Dockerfile names (node:24-bookworm-slim, debian:bookworm-slim)
 * from Debian's packages and this machine's Node, when the engine does not have them: nothing can be
 * pulled here. Where they can be pulled, pull them instead and this does nothing.
 */
export function ensureBaseImages(): void {
  if (hasImage(NODE_BASE)) return;
  const npm = npmPackage();
  const made = run('bash', [MAKE_BASE, process.execPath, npm]);
  if (made.status !== 0) throw new Error(`making ${NODE_BASE} failed: ${made.stderr}`);
}

/**
 * CA certificates npm needs inside `docker build` (an outbound TLS proxy that only this host trusts):
 * EDGEMESH_BUILD_CA_FILE, else Debian's local CA directory. Empty when there are none.
 */
export function buildCa(): string {
  const file = process.env.EDGEMESH_BUILD_CA_FILE;
  if (file) return readFileSync(file, 'utf8');
  const dir = '/usr/local/share/ca-certificates';
  if (!existsSync(dir)) return '';
  return readdirSync(dir)
    .filter((f) => f.endsWith('.crt'))
    .map((f) => readFileSync(join(dir, f), 'utf8'))
    .join('\n');
}

/** Builds the repository's Dockerfile as `tag` with testcontainers; the time it took, in seconds. */
export async function buildEdgeMeshImage(tag: string): Promise<number> {
  const { GenericContainer } = await import('testcontainers');
  const started = Date.now();
  const revision = `e2e-${randomUUID()}`;
  await GenericContainer.fromDockerfile(ROOT)
    .withBuildArgs({ NPM_EXTRA_CA: buildCa(), REVISION: revision })
    .build(tag, { deleteOnExit: false });
  // A failed build can leave an older image under the tag (and the legacy builder's failure does not
  // always reach testcontainers): only an image labelled with this build's revision is ours.
  const label = run('docker', [
    'image',
    'inspect',
    '--format',
    '{{ index .Config.Labels "org.opencontainers.image.revision" }}',
    tag,
  ]).stdout.trim();
  if (label !== revision)
    throw new Error(`building ${tag} from the Dockerfile failed (the image under the tag is not this build)`);
  return (Date.now() - started) / 1000;
}

/** The image's size in bytes, as the engine reports it. */
export function imageBytes(name: string): number {
  return Number(run('docker', ['image', 'inspect', '--format', '{{.Size}}', name]).stdout.trim());
}

/**
 * A NATS image made from this machine's nats-server binary, on the Node base (there for the
 * Dockerfile anyway): the official `nats` image cannot be pulled here. It runs the server as the
 * official image does (`/nats-server`).
 */
export async function buildNatsImage(tag: string): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'edgemesh-nats-image-'));
  try {
    await copyFile(run('sh', ['-c', 'command -v nats-server']).stdout.trim(), join(dir, 'nats-server'));
    await writeFile(
      join(dir, 'Dockerfile'),
      `FROM ${NODE_BASE}\nCOPY nats-server /nats-server\nUSER 65532:65532\nEXPOSE 4222\nENTRYPOINT ["/nats-server"]\n`,
    );
    const built = run('docker', ['build', '--pull=false', '-q', '-t', tag, dir]);
    if (built.status !== 0) throw new Error(`building ${tag} failed: ${built.stderr}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The gateway address of a Docker network: where its containers reach this host. */
export function networkGateway(network: string): string {
  const out = run('docker', [
    'network',
    'inspect',
    '--format',
    '{{(index .IPAM.Config 0).Gateway}}',
    network,
  ]);
  if (out.status !== 0 || !out.stdout.trim())
    throw new Error(`no gateway for network ${network}: ${out.stderr}`);
  return out.stdout.trim();
}
