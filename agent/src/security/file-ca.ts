import { readFile } from 'node:fs/promises';
import type { MeshRef } from '@edgemesh/identity/node';
import type { CertificateIssuer, TrustSource } from './node-credentials.ts';

/**
 * A CA kept in files (outside Kubernetes: the local mesh, tests): the agent signs its own
 * certificate with it, through the same key, request and checks as the operator's issuance. Its files
 * are read again for every certificate, so replacing them (a CA rotation) takes effect at the next
 * renewal. The CA's code (@peculiar/x509 and the ASN.1 it brings) is loaded at the first certificate,
 * and only here: an agent whose certificates come from the operator never loads it (3-4 MiB of memory
 * for as long as it runs; docs/deploy.md).
 */
export class FileCaIssuer implements CertificateIssuer {
  readonly name: string;
  readonly #opts: { certFile: string; keyFile: string; mesh: MeshRef; node: string; ttlMs: number };

  constructor(opts: { certFile: string; keyFile: string; mesh: MeshRef; node: string; ttlMs: number }) {
    this.#opts = opts;
    this.name = `file CA ${opts.certFile}`;
  }

  async issue(csrPem: string): Promise<string> {
    const { certFile, keyFile, mesh, node, ttlMs } = this.#opts;
    const [certPem, keyPem] = await Promise.all([readFile(certFile, 'utf8'), readFile(keyFile, 'utf8')]);
    const { MeshCa } = await import('@edgemesh/identity');
    const ca = await MeshCa.load({ certPem, keyPem });
    return ca.issue({ csrPem, mesh, node, ttlMs });
  }
}

/** A trust bundle in a file (a mounted ConfigMap, or the file CA's certificate). */
export function fileTrust(file: string): TrustSource {
  return { read: () => readFile(file, 'utf8') };
}
