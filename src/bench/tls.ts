import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** A server certificate for 127.0.0.1 and localhost, and the CA the load generator trusts. */
export interface BenchCertificate {
  cert: string;
  key: string;
  /** the CA certificate, PEM text, for the clients */
  ca: string;
}

/**
 * Makes a throw-away CA and a server certificate in `dir` with openssl (Debian's, as the brokers
 * the bench compares against): ECDSA P-256, as a modern deployment would use, for every server
 * of a `--tls` run alike.
 */
export function benchCertificate(dir: string): BenchCertificate {
  const run = (args: string[]) => {
    const result = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    if (result.error) throw new Error(`--tls needs openssl: ${result.error.message} (apt-get install openssl)`);
    if (result.status !== 0) throw new Error(`openssl ${args[0]} failed: ${result.stderr.trim()}`);
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=junction bench CA']);
  run(['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost']);
  writeFileSync(path.join(dir, 'server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  run(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', '1', '-days', '2', '-out', 'server.crt', '-extfile', 'server.ext']);
  return { cert: path.join(dir, 'server.crt'), key: path.join(dir, 'server.key'), ca: readFileSync(path.join(dir, 'ca.crt'), 'utf8') };
}
