import { readFileSync } from 'node:fs';
import semver from 'semver';
import { describe, expect, it } from 'vitest';

interface LockedPackage {
  version?: string;
  engines?: { node?: string } | string[];
}

const manifest = JSON.parse(readFileSync('package.json', 'utf8')) as { engines: { node: string } };
const lock = JSON.parse(readFileSync('package-lock.json', 'utf8')) as { packages: Record<string, LockedPackage> };

describe('the Node versions package.json promises', () => {
  // npm ci prints EBADENGINE for each locked package whose engines.node leaves out the running Node.
  it('every locked package allows the oldest of them', () => {
    const oldest = semver.minVersion(manifest.engines.node)!.version;
    const refusing = Object.entries(lock.packages)
      .filter(([path]) => path !== '')
      .flatMap(([path, pkg]) => {
        const wanted = Array.isArray(pkg.engines) ? undefined : pkg.engines?.node;
        return wanted !== undefined && !semver.satisfies(oldest, wanted) ? [`${path}@${pkg.version} wants node ${wanted}`] : [];
      });
    expect(refusing).toEqual([]);
  });
});
