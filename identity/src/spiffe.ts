/** The trust domain of every EdgeMesh node identity. */
export const TRUST_DOMAIN = 'edgemesh.p2p.dev';

/** A mesh by namespace and name: kept apart, since joined they can be ambiguous (`a-b` + `c`, `a` + `b-c`). */
export interface MeshRef {
  namespace: string;
  name: string;
}

/** Whom a node certificate names: the mesh (namespace, name) and the node. */
export interface NodeIdentity {
  mesh: MeshRef;
  node: string;
}

const PREFIX = `spiffe://${TRUST_DOMAIN}/ns/`;
const SEGMENT = '([^/]+)';
const PATTERN = new RegExp(
  `^spiffe://${TRUST_DOMAIN.replaceAll('.', '\\.')}/ns/${SEGMENT}/mesh/${SEGMENT}/node/${SEGMENT}$`,
);

/** The SPIFFE-style identity a node certificate carries as its only URI SAN. */
export function nodeSpiffeId(mesh: MeshRef, node: string): string {
  const segment = encodeURIComponent;
  return `${PREFIX}${segment(mesh.namespace)}/mesh/${segment(mesh.name)}/node/${segment(node)}`;
}

/** The mesh and node a SPIFFE id names; undefined for anything that is not a node identity of ours. */
export function parseNodeSpiffeId(uri: string): NodeIdentity | undefined {
  const m = PATTERN.exec(uri);
  if (!m) return undefined;
  try {
    const [namespace, name, node] = [m[1]!, m[2]!, m[3]!].map(decodeURIComponent) as [string, string, string];
    // Only the canonical form: one identity, one spelling.
    if (nodeSpiffeId({ namespace, name }, node) !== uri) return undefined;
    return { mesh: { namespace, name }, node };
  } catch {
    return undefined; // malformed percent-encoding
  }
}

export const sameMesh = (a: MeshRef, b: MeshRef) => a.namespace === b.namespace && a.name === b.name;

/**
 * The URIs in a certificate's subjectAltName as Node's `X509Certificate.subjectAltName` and
 * `tls.PeerCertificate.subjectaltname` write it: `URI:a, DNS:b`, a value with a comma or quote
 * written as a JSON string (`URI:"a,b"`).
 */
export function sanUris(subjectAltName: string | undefined): string[] {
  if (!subjectAltName) return [];
  const uris: string[] = [];
  let rest = subjectAltName;
  while (rest.length > 0) {
    const colon = rest.indexOf(':');
    if (colon < 0) break;
    const type = rest.slice(0, colon);
    rest = rest.slice(colon + 1);
    let value: string;
    if (rest.startsWith('"')) {
      // JSON-quoted: find the closing quote, skipping escapes.
      let i = 1;
      while (i < rest.length && rest[i] !== '"') i += rest[i] === '\\' ? 2 : 1;
      try {
        value = JSON.parse(rest.slice(0, i + 1)) as string;
      } catch {
        return uris.concat(['\u0000unparsable']); // never matches a node identity
      }
      rest = rest.slice(i + 1);
    } else {
      const end = rest.indexOf(', ');
      value = end < 0 ? rest : rest.slice(0, end);
      rest = end < 0 ? '' : rest.slice(end);
    }
    if (type === 'URI') uris.push(value);
    rest = rest.startsWith(', ') ? rest.slice(2) : rest;
  }
  return uris;
}

/** The node identity a certificate's subjectAltName names: exactly one URI SAN, and ours; else undefined. */
export function identityOfSan(subjectAltName: string | undefined): NodeIdentity | undefined {
  const uris = sanUris(subjectAltName);
  return uris.length === 1 ? parseNodeSpiffeId(uris[0]!) : undefined;
}
