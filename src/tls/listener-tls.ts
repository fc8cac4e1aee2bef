import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { createSecureContext, TLSSocket, type Server as TlsServer, type TlsOptions } from 'node:tls';
import { SetupError } from '../errors.js';
import type { Logger } from '../log.js';

/** `listeners.<name>.tls`, as loaded: file paths are absolute. */
export interface TlsConfig {
  cert: string;
  key: string;
  ca?: string | undefined;
  clientCert: 'none' | 'request' | 'require';
}

/** What a TLS client's certificate says, once the handshake is done. */
export interface ClientCertificate {
  /** the chain leads to `tls.ca` and the certificate is valid now */
  authorized: boolean;
  /** why not, when not */
  error?: string;
  commonName?: string;
  /** subjectAltName entries as `TYPE:value` (DNS:…, URI:…, email:…) */
  altNames: string[];
}

interface Material {
  cert: Buffer;
  key: Buffer;
  ca: Buffer | undefined;
}

/** TLS 1.2 at least: 1.0 and 1.1 are deprecated (RFC 8996). */
export const MIN_TLS_VERSION = 'TLSv1.2';
/** a handshake-failure line per listener at most this often; the others are counted in it */
const FAILURE_LOG_INTERVAL_MS = 10_000;

/**
 * The certificate, key and client CA of one listener, read from the files `listeners.<name>.tls`
 * names, and the servers that use them. `renew()` reads the files again and hands every server
 * the new context: connections already open keep the one they shook hands with, new ones get the
 * new one; files that cannot be used leave the old context in force.
 */
export class ListenerTls {
  readonly listener: string;
  readonly config: TlsConfig;
  #material: Material;
  readonly #servers = new Set<TlsServer>();
  /** handshakes that failed, by reason (plaintext client, unknown CA, …) */
  readonly failures: Record<string, number> = {};
  #failuresSinceLog = 0;
  #lastFailureLog = 0;

  /** ms a client has to finish its handshake (listeners.<name>.timeouts.handshake) */
  readonly #handshakeTimeout: number;

  /** Reads the files; throws SetupError naming the key of the file that cannot be used. */
  constructor(listener: string, config: TlsConfig, handshakeTimeout: number) {
    this.listener = listener;
    this.config = config;
    this.#handshakeTimeout = handshakeTimeout;
    this.#material = this.#read();
  }

  get files(): string[] {
    return [this.config.cert, this.config.key, ...(this.config.ca !== undefined ? [this.config.ca] : [])];
  }

  /** Options for tls.createServer, https and http2 secure servers. */
  serverOptions(): TlsOptions {
    const { clientCert } = this.config;
    return {
      ...this.#contextOptions(),
      minVersion: MIN_TLS_VERSION,
      requestCert: clientCert !== 'none',
      // `request`: a client without a certificate (or with one the CA did not sign) still gets in,
      // and authenticates otherwise; the certificate is a credential only when it verifies.
      rejectUnauthorized: clientCert === 'require',
      handshakeTimeout: this.#handshakeTimeout,
    };
  }

  #contextOptions(): TlsOptions {
    const { cert, key, ca } = this.#material;
    return { cert, key, ...(ca !== undefined ? { ca } : {}), minVersion: MIN_TLS_VERSION };
  }

  /** Serves `server` with this listener's context from now on, renewals included, and watches its failed handshakes. */
  attach(server: TlsServer, logger: Logger): void {
    this.#servers.add(server);
    server.on('close', () => this.#servers.delete(server));
    server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => this.#failed(err, socket, logger));
  }

  /**
   * Reads the files again. On success every attached server takes the new context for new
   * connections; on failure the old one stays and the SetupError says which file is wrong.
   */
  renew(): SetupError | undefined {
    let material: Material;
    try {
      material = this.#read();
    } catch (err) {
      return err as SetupError;
    }
    this.#material = material;
    for (const server of this.#servers) server.setSecureContext(this.#contextOptions());
    return undefined;
  }

  /** The client certificate of a TLS socket, when the client sent one. */
  clientCertificate(socket: Socket | undefined): ClientCertificate | undefined {
    if (!(socket instanceof TLSSocket) || this.config.clientCert === 'none') return undefined;
    const cert = socket.getPeerCertificate();
    if (!cert || Object.keys(cert).length === 0) return undefined;
    const commonName = typeof cert.subject?.CN === 'string' ? cert.subject.CN : undefined;
    const altNames = (cert.subjectaltname ?? '').split(',').map((entry) => entry.trim()).filter((entry) => entry !== '');
    const error = socket.authorizationError;
    return {
      authorized: socket.authorized,
      ...(error ? { error: String(error) } : {}),
      ...(commonName !== undefined ? { commonName } : {}),
      altNames,
    };
  }

  #read(): Material {
    const at = `listeners.${this.listener}.tls`;
    const read = (key: 'cert' | 'key' | 'ca', file: string): Buffer => {
      try {
        return readFileSync(file);
      } catch (err) {
        throw new SetupError(`${at}.${key}`, `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
      }
    };
    const material: Material = { cert: read('cert', this.config.cert), key: read('key', this.config.key), ca: this.config.ca !== undefined ? read('ca', this.config.ca) : undefined };
    const check = (key: 'cert' | 'key' | 'ca', what: string, use: () => unknown) => {
      try {
        use();
      } catch (err) {
        throw new SetupError(`${at}.${key}`, `${what}: ${(err as Error).message}`);
      }
    };
    check('cert', `${this.config.cert} holds no PEM certificate`, () => new X509Certificate(material.cert));
    check('key', `${this.config.key} holds no PEM private key`, () => createPrivateKey(material.key));
    check('key', `${this.config.key} is not the key of ${this.config.cert}`, () => createSecureContext({ cert: material.cert, key: material.key }));
    if (material.ca !== undefined) check('ca', `${this.config.ca} holds no usable CA certificate`, () => createSecureContext({ ca: material.ca }));
    return material;
  }

  /** Counts a failed handshake; logs one line per listener per interval, with the count. */
  #failed(err: NodeJS.ErrnoException, socket: TLSSocket, logger: Logger): void {
    const reason = handshakeFailure(err);
    this.failures[reason] = (this.failures[reason] ?? 0) + 1;
    this.#failuresSinceLog++;
    const now = Date.now();
    if (now - this.#lastFailureLog < FAILURE_LOG_INTERVAL_MS) return;
    logger.warn({ listener: this.listener, reason, remoteAddress: socket.remoteAddress, failedSinceLastLine: this.#failuresSinceLog, error: err.code ?? err.message },
      reason === 'plaintext' ? `listeners.${this.listener}: a client spoke plaintext to this TLS port; it must connect with TLS` : `listeners.${this.listener}: a TLS handshake failed (${reason})`);
    this.#failuresSinceLog = 0;
    this.#lastFailureLog = now;
  }
}

/** A bounded set of reasons, for logs and metrics labels. */
function handshakeFailure(err: NodeJS.ErrnoException): string {
  const text = `${err.code ?? ''} ${err.message}`;
  if (/WRONG_VERSION_NUMBER|HTTP_REQUEST|UNKNOWN_PROTOCOL|PACKET_LENGTH_TOO_LONG|record layer failure/i.test(text)) return 'plaintext';
  if (/UNSUPPORTED_PROTOCOL|VERSION_TOO_LOW|NO_PROTOCOLS_AVAILABLE/i.test(text)) return 'old_version';
  if (/CERTIFICATE|PEER_DID_NOT_RETURN|UNKNOWN_CA|CERT/i.test(text)) return 'client_certificate';
  if (/HANDSHAKE_TIMEOUT/i.test(text)) return 'timeout';
  if (/ECONNRESET|socket hang up|timed out|ETIMEDOUT/i.test(text)) return 'aborted';
  return 'other';
}
