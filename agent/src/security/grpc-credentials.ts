import {
  type ChannelCredentials,
  credentials,
  experimental,
  type ServerCredentials,
  ServerCredentials as Server,
  status,
} from '@grpc/grpc-js';
import type { ConnectionOptions, PeerCertificate } from 'node:tls';
import { type NodeCredentials, PeerIdentityError } from './node-credentials.ts';

/**
 * Server credentials for the peer service: mutual TLS against the mesh's trust bundle, a client
 * certificate required (no certificate, no connection); plaintext only when mTLS is turned off.
 */
export function peerServerCredentials(node: NodeCredentials | undefined): ServerCredentials {
  return node
    ? experimental.createCertificateProviderServerCredentials(node, node, true)
    : Server.createInsecure();
}

/**
 * Channel credentials to one peer: mutual TLS, and the peer's certificate must name `expected` (a
 * member's announced id), or any node of this mesh when `expected` is undefined (a static peer
 * known by address only); `seen` hears the node it named.
 */
export function peerChannelCredentials(
  node: NodeCredentials | undefined,
  expected: string | undefined,
  seen?: (nodeId: string) => void,
): ChannelCredentials {
  if (!node) return credentials.createInsecure();
  return experimental.createCertificateProviderChannelCredentials(node, node, {
    checkServerIdentity: (_host: string, cert: PeerCertificate) => {
      try {
        seen?.(node.authenticate(cert, expected));
        return undefined;
      } catch (error) {
        return error as Error;
      }
    },
  });
}

/** The gRPC error for a caller whose certificate does not make it a node of this mesh. */
export function unauthenticated(error: unknown) {
  const details =
    error instanceof PeerIdentityError ? `not a node of this mesh: ${error.message}` : 'not authenticated';
  return Object.assign(new Error(details), { code: status.UNAUTHENTICATED, details });
}

/**
 * TLS options for the bulk stream to one peer (transport/bulk-client.ts): this node's certificate,
 * the mesh's trust bundle, and the peer's certificate must name `expected` (or any node of this mesh
 * when undefined), as for gRPC. Read at each connection, so renewals apply to the next one.
 */
export function peerTlsOptions(node: NodeCredentials, expected: string | undefined): ConnectionOptions {
  return {
    secureContext: node.secureContext,
    servername: 'node.edgemesh.p2p.dev',
    checkServerIdentity: (_host: string, cert: PeerCertificate) => {
      try {
        node.authenticate(cert, expected);
        return undefined;
      } catch (error) {
        return error as Error;
      }
    },
  };
}
