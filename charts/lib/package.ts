import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { isScalar, parseDocument } from 'yaml';
import { CHART, helm } from './helm.ts';
import { valueEntries, valuesTable, withValuesTable } from './values-doc.ts';

/** SemVer 2, which Helm requires of a chart's version. */
const SEMVER = /^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$/;
/** The values schema's own rule for image.repository. */
const REPOSITORY = /^[^\s:@]+(:[0-9]+)?(\/[^\s:@]+)*$/;

/**
 * values.yaml with `image.repository` set to `repository`, and nothing else changed (comments,
 * layout and every other value stay as they are).
 */
export function withImageRepository(valuesYaml: string, repository: string): string {
  if (!REPOSITORY.test(repository)) throw new Error(`not an image repository: ${repository}`);
  const node = parseDocument(valuesYaml).getIn(['image', 'repository'], true);
  if (!isScalar(node) || !node.range) throw new Error('values.yaml has no image.repository');
  const [start, end] = node.range;
  return `${valuesYaml.slice(0, start)}${repository}${valuesYaml.slice(end)}`;
}

/**
 * Packages charts/edgemesh as a release: version and appVersion `version` (so the image tag
 * defaults to it), image.repository `image`, the README's values table made again from those
 * values, the CRD copied in (not linked). Returns the path of `edgemesh-<version>.tgz` in `out`.
 */
export function packageChart(opts: { image: string; version: string; out: string }): string {
  if (!SEMVER.test(opts.version)) throw new Error(`not a SemVer version: ${opts.version}`);
  const work = mkdtempSync(join(tmpdir(), 'edgemesh-package-'));
  try {
    const chart = join(work, 'edgemesh');
    cpSync(CHART, chart, { recursive: true, dereference: true });
    const values = withImageRepository(readFileSync(join(chart, 'values.yaml'), 'utf8'), opts.image);
    writeFileSync(join(chart, 'values.yaml'), values);
    const readme = join(chart, 'README.md');
    writeFileSync(readme, withValuesTable(readFileSync(readme, 'utf8'), valuesTable(valueEntries(values))));
    const out = resolve(opts.out);
    mkdirSync(out, { recursive: true });
    execFileSync(
      helm(),
      ['package', chart, '--version', opts.version, '--app-version', opts.version, '--destination', out],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    return join(out, `edgemesh-${opts.version}.tgz`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
