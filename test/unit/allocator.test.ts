import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { JEMALLOC, JEMALLOC_CONF, onGlibcMalloc } from '../../src/allocator.js';

describe('the C allocator', () => {
  it('is the one npm start preloads', () => {
    const start = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: { start: string } }).scripts.start;
    expect(start).toContain(`export LD_PRELOAD="${JEMALLOC}`);
    expect(start).toContain(`MALLOC_CONF="\${MALLOC_CONF:-${JEMALLOC_CONF}}"`);
  });

  it('is set up in the supervisor examples as npm start sets it up', () => {
    const operations = readFileSync(new URL('../../docs/operations.md', import.meta.url), 'utf8');
    expect(operations).toContain(`Environment=LD_PRELOAD=${JEMALLOC} MALLOC_CONF=${JEMALLOC_CONF}`);
    expect(operations).toContain(`ENV LD_PRELOAD=${JEMALLOC} MALLOC_CONF=${JEMALLOC_CONF}`);
  });

  it('is not glibc\'s once jemalloc is preloaded', () => {
    expect(onGlibcMalloc({ LD_PRELOAD: `/usr/lib/x86_64-linux-gnu/${JEMALLOC}` })).toBe(false);
  });
});
