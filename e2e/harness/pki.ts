import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** File paths of the test control plane's key material, all inside one directory. */
export interface Pki {
  caCert: string;
  caKey: string;
  /** The API server's serving certificate (127.0.0.1, localhost, kubernetes.default.svc). */
  servingCert: string;
  servingKey: string;
  /** The service-account token signing key pair (PKCS#8 private, SPKI public). */
  serviceAccountKey: string;
  serviceAccountPub: string;
  /** Client certificates by name, e.g. admin (system:masters), the controller manager, the scheduler. */
  clients: Record<string, { cert: string; key: string }>;
}

const openssl = (args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/**
 * A CA valid for one day and certificates signed by it, made with the openssl command line (as
 * kubeadm's `certs` phase would), the way envtest provisions its API server: a serving
 * certificate, client certificates whose CN is the user and O the groups, and a service-account
 * signing key.
 */
export function makePki(dir: string, clients: Record<string, { user: string; groups?: string[] }>): Pki {
  const path = (name: string) => join(dir, name);
  openssl([
    ...['req', '-x509', ...EC, '-keyout', path('ca.key'), '-out', path('ca.crt'), '-days', '1'],
    ...['-subj', '/CN=edgemesh-test-control-plane-ca'],
    ...['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
  ]);
  const issue = (name: string, subject: string, extensions: string[]) => {
    openssl([
      ...['req', '-x509', ...EC, '-keyout', path(`${name}.key`), '-out', path(`${name}.crt`), '-days', '1'],
      ...['-subj', subject, '-CA', path('ca.crt'), '-CAkey', path('ca.key')],
      ...extensions.flatMap((e) => ['-addext', e]),
    ]);
    return { cert: path(`${name}.crt`), key: path(`${name}.key`) };
  };
  const serving = issue('apiserver', '/CN=kube-apiserver', [
    'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc',
    'extendedKeyUsage=serverAuth',
    'basicConstraints=critical,CA:FALSE',
  ]);
  const issued: Pki['clients'] = {};
  for (const [name, { user, groups = [] }] of Object.entries(clients)) {
    const subject = `${groups.map((g) => `/O=${g}`).join('')}/CN=${user}`;
    issued[name] = issue(`client-${name}`, subject, [
      'extendedKeyUsage=clientAuth',
      'basicConstraints=critical,CA:FALSE',
    ]);
  }
  const sa = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  writeFileSync(path('sa.key'), sa.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  writeFileSync(path('sa.pub'), sa.publicKey.export({ type: 'spki', format: 'pem' }));
  return {
    caCert: path('ca.crt'),
    caKey: path('ca.key'),
    servingCert: serving.cert,
    servingKey: serving.key,
    serviceAccountKey: path('sa.key'),
    serviceAccountPub: path('sa.pub'),
    clients: issued,
  };
}
