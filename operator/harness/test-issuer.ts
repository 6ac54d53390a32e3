import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCa, createServingCertificate, MeshCa, type MeshRef } from '@edgemesh/identity';
import { pino } from 'pino';
import type { IssuanceApi } from '../src/identity/issuance.ts';
import { startIssuerServer } from '../src/identity/issuer-server.ts';
import { MESH_LABEL } from '../src/reconcile/desired.ts';

/** The operator's issuance endpoint, for agents outside a cluster (see startTestIssuer). */
export interface TestIssuer {
  /** The endpoint, as agents reach it (`https://<name>:<port>`, `name` the serving certificate's). */
  url: string;
  port: number;
  /** The endpoint's serving certificate: what agents trust for it (`security.issuer.caFile`). */
  servingCertPem: string;
  /** The mesh CA's certificate: the agents' trust bundle (`security.trustBundleFile`). */
  trustPem: string;
  /** The projected token of `node`'s agent pod (made at the first call for that node). */
  tokenFor(node: string): string;
  /** The agent flags for `node`'s certificates from here, given where its three files are. */
  agentFlags(files: { tokenFile: string; caFile: string; trustBundleFile: string }): string[];
  /**
   * For an agent on this machine: writes `node`'s token, the endpoint's certificate and the trust
   * bundle into `dir` (`<node>.token`, `issuer.crt`, `ca.crt`) and gives its flags (agentFlags).
   */
  agentFilesIn(dir: string, node: string): Promise<string[]>;
  /** Certificates issued so far. */
  readonly issued: number;
  /** The nodes certificates were issued for, in order. */
  readonly issuedTo: readonly string[];
  close(): Promise<void>;
}

const DAEMON_SET_UID = 'daemonset-uid-test';

/**
 * The operator's real issuance endpoint (`startIssuerServer` with its checks: the request, the token
 * and the pod, the mesh's CA) for agents that run outside a cluster, such as the image's containers
 * or the idle bench: what the API server would answer (a TokenReview, the pod, the DaemonSet) comes
 * from a table of one token per node, each naming an agent pod of the mesh's DaemonSet running on
 * that node, as the kubelet projects them. So the agents get their certificates as they do in
 * Kubernetes, and load no CA code of their own. `name` is the host name agents reach it by (its
 * serving certificate names it); it listens on `host`. A test harness, never shipped (nothing under
 * src/ imports it, and the image holds no harness): it leaves out the operator's local check of the
 * token against the cluster's keys (its tokens are random strings, not JWTs) and revocations, and
 * lets one caller ask 100 times a second.
 */
export async function startTestIssuer(opts: {
  mesh: MeshRef;
  host: string;
  name?: string;
}): Promise<TestIssuer> {
  const { mesh } = opts;
  const name = opts.name ?? 'localhost';
  const ca = await MeshCa.load(await createCa(mesh));
  const serving = await createServingCertificate([name]);
  const nodeOfToken = new Map<string, string>();
  const tokenOfNode = new Map<string, string>();
  const agent = `edgemesh-${mesh.name}`;
  const podOf = (node: string) => `${agent}-${node}`;
  const api: IssuanceApi = {
    reviewToken: (token, audiences) => {
      const node = nodeOfToken.get(token);
      if (node === undefined) return Promise.resolve({ authenticated: false });
      return Promise.resolve({
        authenticated: true,
        audiences,
        user: {
          username: `system:serviceaccount:${mesh.namespace}:${agent}`,
          groups: ['system:serviceaccounts', `system:serviceaccounts:${mesh.namespace}`],
          extra: {
            'authentication.kubernetes.io/pod-name': [podOf(node)],
            'authentication.kubernetes.io/pod-uid': [`uid-${node}`],
            'authentication.kubernetes.io/node-name': [node],
          },
        },
      });
    },
    getPod: (namespace, pod) => {
      const node = [...tokenOfNode.keys()].find((n) => podOf(n) === pod);
      if (namespace !== mesh.namespace || node === undefined) return Promise.resolve(undefined);
      return Promise.resolve({
        metadata: {
          name: pod,
          namespace,
          uid: `uid-${node}`,
          labels: { [MESH_LABEL]: mesh.name },
          ownerReferences: [
            { apiVersion: 'apps/v1', kind: 'DaemonSet', name: agent, uid: DAEMON_SET_UID, controller: true },
          ],
        },
        spec: { nodeName: node, containers: [] },
        status: { phase: 'Running' },
      });
    },
    daemonSetUid: (namespace, ds) =>
      Promise.resolve(namespace === mesh.namespace && ds === agent ? DAEMON_SET_UID : undefined),
  };
  const issuedTo: string[] = [];
  const recording: MeshCa = Object.assign(Object.create(ca) as MeshCa, {
    issue: async (request: Parameters<MeshCa['issue']>[0]) => {
      const pem = await ca.issue(request);
      issuedTo.push(request.node);
      return pem;
    },
  });
  const server = await startIssuerServer({
    host: opts.host,
    port: 0,
    tls: serving,
    api,
    // The mesh's CA, with its issue() noting whom it signs for (the rest is the CA's own).
    meshCa: (ref) =>
      Promise.resolve(ref.namespace === mesh.namespace && ref.name === mesh.name ? recording : undefined),
    logger: pino({ level: 'silent' }),
    perCallerPerSecond: 100,
  });
  const url = `https://${name}:${server.port}`;
  const tokenFor = (node: string) => {
    let token = tokenOfNode.get(node);
    if (token === undefined) {
      token = randomBytes(24).toString('base64url');
      tokenOfNode.set(node, token);
      nodeOfToken.set(token, node);
    }
    return token;
  };
  const agentFlags: TestIssuer['agentFlags'] = ({ tokenFile, caFile, trustBundleFile }) => [
    ...['--security.issuer.url', url, '--security.issuer.token-file', tokenFile],
    ...['--security.issuer.ca-file', caFile, '--security.issuer.namespace', mesh.namespace],
    ...['--security.issuer.name', mesh.name, '--security.trust-bundle-file', trustBundleFile],
    ...['--mesh', mesh.name],
  ];
  return {
    url,
    port: server.port,
    servingCertPem: serving.certPem,
    trustPem: ca.certPem,
    tokenFor,
    agentFlags,
    async agentFilesIn(dir, node) {
      const files = {
        tokenFile: join(dir, `${node}.token`),
        caFile: join(dir, 'issuer.crt'),
        trustBundleFile: join(dir, 'ca.crt'),
      };
      await writeFile(files.tokenFile, tokenFor(node));
      await writeFile(files.caFile, serving.certPem);
      await writeFile(files.trustBundleFile, ca.certPem);
      return agentFlags(files);
    },
    get issued() {
      return issuedTo.length;
    },
    issuedTo,
    close: () => server.close(),
  };
}
