import {
  type ChannelCredentials,
  credentials,
  experimental,
  type ServerCredentials,
  ServerCredentials as Server,
  status,
} from '@grpc/grpc-js';
import type { PeerCertificate } from 'node:tls';
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
