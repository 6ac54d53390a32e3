import type { Meter } from '@opentelemetry/api';

/** Which build a process is: its package version and the source revision it was built from. */
export interface BuildInfo {
  version: string;
  /** A commit id, or `unknown` when the build did not say (EDGEMESH_REVISION). */
  revision: string;
}

/** The build, from the package's version and EDGEMESH_REVISION (the image sets it; else `unknown`). */
export const buildInfo = (version: string, env: NodeJS.ProcessEnv = process.env): BuildInfo => ({
  version,
  revision: env.EDGEMESH_REVISION || 'unknown',
});

/**
 * `edgemesh.build.info` (Prometheus: edgemesh_build_info): always 1, labelled with the version and
 * revision, the usual way to see which builds run and to join them to other series.
 */
export function observeBuildInfo(meter: Meter, build: BuildInfo): void {
  meter
    .createObservableGauge('edgemesh.build.info', {
      description: 'Always 1; the version and source revision of this build',
    })
    .addCallback((r) => r.observe(1, { version: build.version, revision: build.revision }));
}
