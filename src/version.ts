import { existsSync, readFileSync } from 'node:fs';

/**
 * The nearest package.json above this module: the package root, from src/ (tests run the
 * sources) as from dist/src/ (the built CLI).
 */
function packageFile(): URL {
  for (const up of ['../package.json', '../../package.json']) {
    const file = new URL(up, import.meta.url);
    if (existsSync(file)) return file;
  }
  throw new Error('package.json not found above src/version.ts');
}

/** The package's version, as `junction --version` prints it and each cluster node reports it. */
export const PACKAGE_VERSION = (JSON.parse(readFileSync(packageFile(), 'utf8')) as { version: string }).version;
