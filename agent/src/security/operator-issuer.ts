import { readFile } from 'node:fs/promises';
import { request } from 'node:https';
import type { CertificateIssuer } from './node-credentials.ts';

/** The largest answer taken from the issuer (a certificate is about 1 KiB). */
const MAX_ANSWER_BYTES = 64 * 1024;

export interface OperatorIssuerOptions {
  /** The endpoint (https). */
  url: string;
  /** The projected ServiceAccount token, read at every request. */
  tokenFile: string;
  /** The endpoint's serving certificate, the only one trusted for it. */
  caFile: string;
  /** The EdgeMesh: its namespace and name. */
  namespace: string;
  mesh: string;
  /** This node, the one the certificate must name. */
  node: string;
}

/**
 * The operator's issuance endpoint (Kubernetes): the agent POSTs its certificate request with its
 * projected ServiceAccount token, read fresh from its file each time (the kubelet renews it), and
 * checks the endpoint's serving certificate against the issuer certificate of the mesh's trust
 * ConfigMap, so the token goes to the operator and nobody else.
 */
export class OperatorIssuer implements CertificateIssuer {
  readonly name: string;
  readonly #opts: OperatorIssuerOptions;

  constructor(opts: OperatorIssuerOptions) {
    this.#opts = opts;
    this.name = `issuer ${opts.url}`;
  }

  async issue(csrPem: string): Promise<string> {
    const { url, tokenFile, caFile, namespace, mesh, node } = this.#opts;
    const [token, ca] = await Promise.all([readFile(tokenFile, 'utf8'), readFile(caFile, 'utf8')]);
    const body = JSON.stringify({ namespace, mesh, node, csr: csrPem });
    const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = request(
        new URL('/v1/certificates', url),
        {
          method: 'POST',
          ca,
          timeout: 10_000,
          headers: {
            Authorization: `Bearer ${token.trim()}`,
            'Content-Type': 'application/json',
            'Content-Length': Buffer.byteLength(body),
          },
        },
        (res) => {
          const parts: Buffer[] = [];
          let size = 0;
          res.on('data', (part: Buffer) => {
            size += part.length;
            if (size > MAX_ANSWER_BYTES) return req.destroy(new Error('the issuer answered too much'));
            parts.push(part);
          });
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, text: Buffer.concat(parts).toString('utf8') }),
          );
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error('the issuer did not answer in 10 s')));
      req.on('error', reject);
      req.end(body);
    });
    let answer: { certificate?: unknown; reason?: unknown; error?: unknown } = {};
    try {
      answer = JSON.parse(text) as typeof answer;
    } catch {
      // reported below with the status
    }
    if (status !== 200 || typeof answer.certificate !== 'string') {
      const why =
        typeof answer.reason === 'string'
          ? answer.reason
          : typeof answer.error === 'string'
            ? answer.error
            : text.slice(0, 200);
      throw new Error(`the issuer answered ${status}: ${why}`);
    }
    return answer.certificate;
  }
}
