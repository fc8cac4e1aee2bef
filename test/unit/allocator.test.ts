import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { JEMALLOC, onGlibcMalloc } from '../../src/allocator.js';

describe('the C allocator', () => {
  it('is the one npm start preloads', () => {
    const start = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: { start: string } }).scripts.start;
    expect(start).toContain(`export LD_PRELOAD="${JEMALLOC}`);
  });

  it('is not glibc\'s once jemalloc is preloaded', () => {
    expect(onGlibcMalloc({ LD_PRELOAD: `/usr/lib/x86_64-linux-gnu/${JEMALLOC}` })).toBe(false);
  });
});
