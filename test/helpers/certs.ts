import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** A test PKI made with Debian's openssl: a CA, a server certificate for loopback, client certificates. */
export interface TestPki {
  dir: string;
  /** CA certificate (PEM file) that signs the server's and the clients' certificates */
  ca: string;
  serverCert: string;
  serverKey: string;
  /** Makes a client certificate signed by the CA (or by `otherCa`) with this subject CN. */
  client(commonName: string, options?: { untrusted?: boolean }): { cert: string; key: string };
  /** Writes a new server certificate (same CA, new key) over serverCert/serverKey; returns its SHA-256 fingerprint. */
  renewServer(): string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** The SHA-256 fingerprint of a PEM certificate file, as node:tls reports `fingerprint256`. */
export function fingerprint(certFile: string): string {
  return new X509Certificate(readFileSync(certFile)).fingerprint256;
}

/** base64(SHA-256(SPKI)) of a certificate, as Chromium's --ignore-certificate-errors-spki-list takes it. */
export function spkiHash(certFile: string): string {
  const key = new X509Certificate(readFileSync(certFile)).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(key).digest('base64');
}

export function makePki(dir: string): TestPki {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=Junction Test CA'], dir);
  openssl(['req', '-x509', ...ec, '-keyout', 'other-ca.key', '-out', 'other-ca.crt', '-days', '2', '-subj', '/CN=Someone Else CA'], dir);
  let serial = 0;
  const sign = (name: string, subject: string, ext: string, caName = 'ca') => {
    openssl(['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject], dir);
    writeFileSync(join(dir, `${name}.ext`), ext);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${caName}.crt`, '-CAkey', `${caName}.key`, '-set_serial', String(++serial),
      '-days', '2', '-out', `${name}.crt`, '-extfile', `${name}.ext`], dir);
    return { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  };
  const serverExt = 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n';
  sign('server', '/CN=localhost', serverExt);
  return {
    dir,
    ca: join(dir, 'ca.crt'),
    serverCert: join(dir, 'server.crt'),
    serverKey: join(dir, 'server.key'),
    client: (commonName, options = {}) => sign(`client-${commonName}${options.untrusted ? '-untrusted' : ''}`, `/CN=${commonName}`, 'extendedKeyUsage=clientAuth\n', options.untrusted ? 'other-ca' : 'ca'),
    renewServer: () => {
      const renewed = sign(`server-${serial + 1}`, '/CN=localhost', serverExt);
      // Key first, then certificate: the gateway reads both once the files stop changing.
      writeFileSync(join(dir, 'server.key'), readFileSync(renewed.key));
      writeFileSync(join(dir, 'server.crt'), readFileSync(renewed.cert));
      return fingerprint(renewed.cert);
    },
  };
}
