import { template } from './helm.ts';

export const INSTALL_FILE = new URL('../../manifests/install.yaml', import.meta.url);

/**
 * The chart with its defaults in namespace edgemesh-system, CRDs included, namespace first; meshes
 * may live in `default` (meshNamespaces), as the cdn sample does.
 */
export function installYaml(): string {
  const header = [
    '# Generated from charts/edgemesh by `npm run manifests`. Do not edit.',
    '# kubectl apply --server-side -f manifests/install.yaml',
    '# Meshes may live in namespace default (the operator manages Secrets there and in edgemesh-system',
    '# only); for others, install the chart with meshNamespaces.',
    "# Needs Kubernetes 1.30 or later (the chart's kubeVersion; this file checks nothing): the CRD's",
    '# CEL rules use the quantity library, and only from 1.30 does the API server let an unchanged',
    '# value an older CRD took through (docs/deploy.md, "Upgrading: CRDs first").',
    'apiVersion: v1',
    'kind: Namespace',
    'metadata:',
    '  name: edgemesh-system',
    '  labels:',
    '    app.kubernetes.io/name: edgemesh',
    '    pod-security.kubernetes.io/enforce: restricted',
  ].join('\n');
  return `${header}\n${template(['--include-crds', '--set', 'meshNamespaces={default}'])}`;
}
