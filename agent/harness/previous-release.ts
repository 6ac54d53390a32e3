import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

/**
 * The agent of an earlier release, built from its git tag, for tests that run it beside this build
 * (agent/test/release-skew.test.ts). The previous release is the newest tag `v*` that is not this
 * commit; `EDGEMESH_PREVIOUS_RELEASE` names another ref instead (any tag or commit, to try the test
 * against it).
 */
export interface PreviousRelease {
  /** The ref built (a tag name, or what EDGEMESH_PREVIOUS_RELEASE said). */
  ref: string;
  commit: string;
  /** The agent's entry point: the release's bundle (its scripts/build.ts) or, before it had one, its sources. */
  main: string;
}

const ROOT = resolve(import.meta.dirname, '..', '..');

function git(...args: string[]): string | undefined {
  const r = spawnSync('git', args, { cwd: ROOT, encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** The ref to build, or why there is none (the test skips, saying so). */
export function previousReleaseRef(): { ref: string } | { none: string } {
  const asked = process.env.EDGEMESH_PREVIOUS_RELEASE;
  if (asked) return { ref: asked };
  if (git('rev-parse', '--git-dir') === undefined)
    return { none: 'not a git checkout: no release tags to build' };
  const head = git('rev-parse', 'HEAD');
  const tags = (git('tag', '--list', 'v*', '--sort=-v:refname') ?? '').split('\n').filter(Boolean);
  const previous = tags.find((tag) => git('rev-list', '-n', '1', tag) !== head);
  return previous
    ? { ref: previous }
    : {
        none:
          'no release tag yet (git tag --list "v*" finds none besides this commit; a shallow clone may ' +
          'lack them: git fetch --tags): nothing earlier to run beside this build',
      };
}

/**
 * Builds (once per commit: kept under the temp directory) the agent of `ref`: its files from `git
 * archive`, this checkout's node_modules when its lock file is this one's (else `npm ci` there), and
 * its own scripts/build.ts. Throws when a step fails.
 */
export function buildPreviousRelease(ref: string): PreviousRelease {
  const commit = git('rev-parse', '--verify', `${ref}^{commit}`);
  if (!commit) throw new Error(`${ref} is no commit here`);
  const dir = join(tmpdir(), `edgemesh-release-${commit.slice(0, 12)}`);
  const bundle = join(dir, 'dist', 'agent.mjs');
  const sources = join(dir, 'agent', 'src', 'main.ts');
  if (existsSync(bundle)) return { ref, commit, main: bundle };
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  run('sh', ['-c', `git archive --format=tar ${commit} | tar -x -C '${dir}'`], ROOT);
  installDependencies(dir);
  if (!existsSync(join(dir, 'scripts', 'build.ts'))) return { ref, commit, main: sources };
  run(process.execPath, [join(dir, 'scripts', 'build.ts'), join(dir, 'dist')], dir);
  return { ref, commit, main: bundle };
}

/**
 * node_modules for the release in `dir`: with the same lock file as this checkout, links to this
 * checkout's packages, except the workspace packages (`@edgemesh/*`), which must be the release's
 * own; with another lock file, `npm ci` (the registry must be reachable then).
 */
function installDependencies(dir: string): void {
  const lock = (root: string) => readFileSync(join(root, 'package-lock.json'), 'utf8');
  if (lock(dir) !== lock(ROOT)) {
    run('npm', ['ci', '--ignore-scripts', '--no-audit', '--no-fund'], dir);
    return;
  }
  const ours = join(ROOT, 'node_modules');
  const theirs = join(dir, 'node_modules');
  mkdirSync(join(theirs, '@edgemesh'), { recursive: true });
  for (const entry of readdirSync(ours)) {
    if (entry !== '@edgemesh') symlinkSync(join(ours, entry), join(theirs, entry));
  }
  for (const workspace of readdirSync(join(ours, '@edgemesh'))) {
    if (existsSync(join(dir, workspace, 'package.json')))
      symlinkSync(join('..', '..', workspace), join(theirs, '@edgemesh', workspace));
    // A workspace's own node_modules (versions that differ from the root's).
    const nested = join(ROOT, workspace, 'node_modules');
    if (
      existsSync(nested) &&
      existsSync(join(dir, workspace)) &&
      !existsSync(join(dir, workspace, 'node_modules'))
    )
      symlinkSync(nested, join(dir, workspace, 'node_modules'));
  }
}

function run(command: string, args: string[], cwd: string): void {
  const r = spawnSync(command, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0)
    throw new Error(
      `${command} ${args.join(' ')} failed (${r.status}):\n${r.stderr || r.stdout}`.slice(0, 4000),
    );
}
