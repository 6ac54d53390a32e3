import { constants } from 'node:crypto';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import { type SecureContext, type SecureContextOptions, TLSSocket, createSecureContext } from 'node:tls';

/**
 * A TLS server that asks every client for a certificate and takes only one OpenSSL verified against
 * the context's CAs, as node:tls's `createServer({ requestCert: true, rejectUnauthorized: true })`
 * does, less the one step of it that leaks.
 *
 * Node 24's server (`onServerSocketSecure` in lib/internal/tls/wrap.js) checks that the client sent
 * a certificate by calling the native `getPeerX509Certificate()`, which takes a reference to the
 * certificate and never gives it back: every handshake left the client's certificate behind, about
 * 5 KB of OpenSSL's memory a connection, for the life of the process (Node 20, without that check,
 * does not). An agent accepting a few connections a second grew by about 0.5 MB a minute for as
 * long as it ran (docs/benchmarks.md, 2026-12-07, eleventh session; `npm run bench -- tls-context`).
 * The check came with nodejs/node#64677; Node 24.21, the latest 24, still grows, Node 26.10 does not
 * (docs/upstream/node-tls-server-leak.mjs, a reproduction without this project's code).
 *
 * Here the TCP server is node:net's and each connection is wrapped in a server-side TLSSocket of its
 * own. After the handshake the checks tls.Server makes are made here, without that call: OpenSSL's
 * verification result (the handle's `verifyError()`, as tls.Server reads it), and a certificate in
 * this very handshake (a resumed session, which carries none, is refused; none can be resumed here:
 * contextOf). A renegotiation attempt closes the connection (tls.Server checks the new handshake's
 * certificate instead), a TLS error after the handshake closes the connection, and a handshake not
 * over in `handshakeTimeoutMs` is closed (tls.Server only reports the last two).
 */
export interface MutualTlsServerOptions {
  /** The certificate, key and trust bundle of new connections (setContext replaces them). */
  context: SecureContextOptions;
  ALPNProtocols: string[];
  handshakeTimeoutMs: number;
  /** A new TCP connection, before its handshake; false has it closed at once. */
  admit?: (raw: Socket) => boolean;
  /** A connection whose handshake ended with a certificate OpenSSL verified. */
  secure: (socket: TLSSocket) => void;
  /** A handshake that failed, timed out, or ended without a verified certificate (it is closed). */
  failed?: (error: Error, socket: TLSSocket) => void;
}

export interface MutualTlsServer {
  /** node:net's server: listen, close, address, maxConnections. */
  readonly server: Server;
  /** New connections get this context (those open keep theirs). Throws on a bad certificate or key. */
  setContext: (context: SecureContextOptions) => void;
}

/** What of a server-side TLSSocket's handle tls.Server itself reads after the handshake. */
interface TlsHandle {
  verifyError(): Error | null | undefined;
}
interface ServerSideSocket {
  _handle: TlsHandle | null;
  /** True until the handshake is over and checked: node:http2 waits for 'secureConnect' while it is. */
  secureConnecting: boolean;
  /** Later TLS errors are the socket's 'error' events (before: only reported, as during the handshake). */
  _releaseControl(): boolean;
}

/**
 * The context of new connections: no renegotiation (TLS 1.2's second handshake would bring a
 * certificate that no longer goes through the checks above, and the bulk stream authenticates each
 * request by the connection's certificate of now; OpenSSL refuses it with an alert and still reports
 * a handshake done, which closes the connection below), and no stateless session tickets: TLS 1.2
 * gets none, TLS 1.3's name a session the server never stores (node:tls keeps no session cache and
 * this server no session callbacks), so a client offering one gets a full handshake. (With stateless
 * tickets and no session id context, such a client failed its handshake instead.)
 */
const contextOf = (options: SecureContextOptions): SecureContext =>
  createSecureContext({
    ...options,
    secureOptions:
      (options.secureOptions ?? 0) | constants.SSL_OP_NO_RENEGOTIATION | constants.SSL_OP_NO_TICKET,
  });

export function createMutualTlsServer(opts: MutualTlsServerOptions): MutualTlsServer {
  let context = contextOf(opts.context);
  const server = createNetServer((raw) => {
    if (opts.admit && !opts.admit(raw)) return void raw.destroy();
    const socket = new TLSSocket(raw, {
      isServer: true,
      secureContext: context,
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: opts.ALPNProtocols,
    });
    let established = false;
    let failed = false;
    const fail = (error: Error) => {
      if (failed) return;
      failed = true;
      clearTimeout(timer);
      socket.destroy();
      opts.failed?.(error, socket);
    };
    const timer = setTimeout(() => fail(new Error('TLS handshake timeout')), opts.handshakeTimeoutMs);
    timer.unref();
    // Errors of the handshake (a bad record, a client that sent no certificate) are reported; a later
    // one (a record that fails its check) ends the connection too, which node:tls leaves open.
    socket.on('error', (error) => (established ? socket.destroy() : fail(error)));
    socket.once('close', () => {
      clearTimeout(timer);
      if (!established) fail(new Error('the client closed the connection during the handshake'));
    });
    const own = socket as unknown as ServerSideSocket;
    socket.on('secure', () => {
      clearTimeout(timer);
      if (failed) return;
      if (established) {
        // A renegotiation attempt (TLS 1.2): refused by the context, it still ends in 'secure'; were
        // it let through, its certificate would be taken for the connection's unchecked.
        socket.destroy();
        return void opts.failed?.(new Error('a TLS renegotiation attempted'), socket);
      }
      if (!own._handle) return fail(new Error('the connection closed as its handshake ended'));
      // An Error (its code OpenSSL's: UNABLE_TO_VERIFY_LEAF_SIGNATURE...), or nothing when verified.
      const verifyError = own._handle.verifyError();
      if (verifyError) return fail(verifyError);
      if (socket.isSessionReused())
        return fail(new Error('a resumed TLS session (no certificate in this handshake)'));
      established = true;
      socket.authorized = true; // as tls.Server has it (grpc-js reads it)
      own.secureConnecting = false;
      own._releaseControl();
      opts.secure(socket);
    });
  });
  return {
    server,
    setContext: (next) => {
      context = contextOf(next);
    },
  };
}
