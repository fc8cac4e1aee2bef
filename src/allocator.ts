import { existsSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The C allocator the gateway should run on: jemalloc, preloaded (`LD_PRELOAD`) by `npm start`,
 * the systemd unit and the Dockerfile of docs/operations.md, and the fuzz campaign. glibc's malloc
 * keeps the native memory freed between live blocks (parsers, socket buffers, HTTP/2 sessions):
 * after malformed input on thousands of connections RSS stayed 10 % above its start after 30,000
 * inputs per protocol and 20 % after 100,000, while on jemalloc it went back below its start;
 * fixed glibc thresholds (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`) did not. The loader reads
 * LD_PRELOAD when the process starts, so the gateway cannot switch by itself: it warns instead.
 * docs/security.md has the measurements.
 */
export const JEMALLOC = 'libjemalloc.so.2';

/**
 * jemalloc's options (`MALLOC_CONF`) wherever it is preloaded: a background thread returns dirty
 * pages to the system on jemalloc's decay schedule. Without it jemalloc purges only while the
 * process allocates, so a gateway idle after a burst kept what the burst left: after a million
 * malformed gRPC inputs and seven idle minutes, RSS stayed 66 % above its start; with it, below.
 */
export const JEMALLOC_CONF = 'background_thread:true';

/** What a gateway started on glibc's malloc logs (a warning, with the library to preload). */
export const GLIBC_MALLOC_WARNING = 'started on glibc\'s malloc, which keeps native memory freed after a load: preload jemalloc (LD_PRELOAD, docs/operations.md)';

/** Where Debian, Ubuntu, Fedora and RHEL put the library (package libjemalloc2, jemalloc). */
const LIBRARY_DIRS = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib'];

/** The installed jemalloc library, if any. */
export function jemallocPath(): string | undefined {
  return LIBRARY_DIRS.map((dir) => join(dir, JEMALLOC)).find((path) => existsSync(path));
}

/** True when this process runs on glibc's allocator: on glibc, and jemalloc not preloaded. */
export function onGlibcMalloc(env: NodeJS.ProcessEnv = process.env): boolean {
  const { header } = process.report.getReport() as { header?: { glibcVersionRuntime?: string } };
  return header?.glibcVersionRuntime !== undefined && !(env.LD_PRELOAD ?? '').includes('jemalloc');
}
