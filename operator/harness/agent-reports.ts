import { createPrivateKey, type KeyObject, sign, X509Certificate } from 'node:crypto';
import { encodeEvent, SIGNATURE_HEADER, SIGNER_HEADER, subjects } from '@edgemesh/contracts';
import { createNodeKey, MeshCa } from '@edgemesh/identity';
import { headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';

/**
 * A mesh's agents as the operator sees them on the control plane, where no agent process runs (the
 * API server fake, kwok's simulated nodes): each node's `node.stats` report, signed with a
 * certificate from the mesh's CA (its Secret, which the operator made) as a real agent's is.
 * Returns a function that publishes one round of reports, one per node (agents send one every 10 s).
 */
export async function agentReports(opts: {
  /** Reads the mesh's CA Secret (`edgemesh-<name>-ca`). */
  secret: (namespace: string, name: string) => Promise<object | undefined>;
  nats: NatsConnection;
  namespace: string;
  name: string;
  nodes: readonly string[];
}): Promise<() => Promise<void>> {
  const { namespace, name } = opts;
  const secret = (await opts.secret(namespace, `edgemesh-${name}-ca`)) as { data?: unknown } | undefined;
  const data = secret?.data as Record<string, string> | undefined;
  if (!data?.['ca.crt'] || !data['ca.key']) throw new Error(`no CA Secret for ${namespace}/${name} yet`);
  const ca = await MeshCa.load({
    certPem: Buffer.from(data['ca.crt'], 'base64').toString(),
    keyPem: Buffer.from(data['ca.key'], 'base64').toString(),
  });
  const signers = new Map<string, { key: KeyObject; der: string }>();
  for (const node of opts.nodes) {
    const key = await createNodeKey(node);
    const cert = await ca.issue({ csrPem: key.csrPem, mesh: { namespace, name }, node });
    signers.set(node, {
      key: createPrivateKey(key.keyPem),
      der: new X509Certificate(cert).raw.toString('base64'),
    });
  }
  const mesh = `${namespace}_${name}`;
  return async () => {
    for (const [node, signer] of signers) {
      const event = encodeEvent({
        v: 1,
        type: 'node.stats',
        mesh,
        from: node,
        sentAtMs: Date.now(),
        body: { hits: 1, misses: 1, bytesFromPeers: 0, bytesFromOrigin: 0, startedAtMs: 1 },
      });
      const h = natsHeaders();
      h.set(SIGNER_HEADER, signer.der);
      h.set(SIGNATURE_HEADER, sign('sha256', event, signer.key).toString('base64'));
      opts.nats.publish(subjects(mesh).stats, event, { headers: h });
    }
    await opts.nats.flush();
  };
}
