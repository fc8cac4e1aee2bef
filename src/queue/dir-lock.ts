import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

const LOCK_FILE = 'queue.lock';

/** Two processes on one directory would each delete the other's segments: a second one is refused. */
export class DirectoryInUseError extends Error {
  constructor(readonly dir: string, readonly pid: number) {
    super(`${dir} is used by another running gateway (process ${pid})`);
    this.name = 'DirectoryInUseError';
  }
}

/**
 * Claims `dir` for this process with a file holding its pid. A lock left by a process that no
 * longer runs (killed, crashed) is taken over, which is what a restart after `kill -9` needs; so is
 * one holding this process's own pid (a container's process is pid 1 at every start).
 */
export async function lockDirectory(dir: string): Promise<DirectoryLock> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, LOCK_FILE);
  // A second round only after removing a stale lock; a process that won the race meanwhile wins.
  for (let round = 0; round < 2; round++) {
    try {
      const fd = openSync(path, 'wx');
      try {
        writeSync(fd, `${process.pid}\n`);
      } finally {
        closeSync(fd);
      }
      return new DirectoryLock(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = Number.parseInt(readLock(path), 10);
    if (Number.isInteger(holder) && holder !== process.pid && isRunning(holder)) throw new DirectoryInUseError(dir, holder);
    unlinkSync(path);
  }
  throw new DirectoryInUseError(dir, Number.parseInt(readLock(path), 10));
}

export class DirectoryLock {
  #held = true;

  constructor(readonly path: string) {}

  release(): void {
    if (!this.#held) return;
    this.#held = false;
    try {
      unlinkSync(this.path);
    } catch {
      // Already gone: nothing left to release.
    }
  }
}

function readLock(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it runs, as another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
