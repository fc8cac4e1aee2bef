import cluster, { type Worker } from 'node:cluster';
import type { Logger } from '../log.js';

/** How a worker learns its number (1…N), which its node id carries. */
const WORKER_ENV = 'JUNCTION_WORKER';
/** A worker that died is started again after this long, so a crash loop does not spin. */
const RESTART_DELAY_MS = 1000;
/** Exit code of a start the worker refused (SetupError, a bad config): no point in restarting it. */
const SETUP_FAILED = 1;

/** This process's worker number, when it is one of `--workers N`. */
export function workerNumber(): number | undefined {
  const value = process.env[WORKER_ENV];
  return cluster.isWorker && value !== undefined ? Number(value) : undefined;
}

/** Whether this process is the one that starts the workers rather than a gateway. */
export function isSupervisor(workers: number): boolean {
  return workers > 1 && cluster.isPrimary;
}

/**
 * The primary of `--workers N`: N worker processes, each a gateway and a node of the cluster,
 * share the listeners (node:cluster hands out the connections). A worker that dies is started
 * again with the same number; one whose start failed ends them all with its code. SIGHUP goes to
 * every worker; SIGTERM and SIGINT drain them, then the primary exits.
 */
export function superviseWorkers(count: number, logger: Logger): void {
  let stopping = false;
  const running = new Map<Worker, number>();
  const fork = (number: number) => {
    const worker = cluster.fork({ [WORKER_ENV]: String(number) });
    running.set(worker, number);
    worker.once('exit', (code, signal) => {
      running.delete(worker);
      if (stopping) {
        if (running.size === 0) process.exit(0);
        return;
      }
      if (code === SETUP_FAILED) {
        logger.error({ worker: number }, 'a worker could not start: stopping the others');
        stopping = true;
        for (const other of running.keys()) other.process.kill('SIGTERM');
        if (running.size === 0) process.exit(SETUP_FAILED);
        process.exitCode = SETUP_FAILED;
        return;
      }
      logger.error({ worker: number, code, signal }, 'worker died: starting it again');
      setTimeout(() => fork(number), RESTART_DELAY_MS);
    });
  };
  for (let number = 1; number <= count; number++) fork(number);
  logger.info({ workers: count }, 'workers started');
  const stop = (signal: NodeJS.Signals) => {
    stopping = true;
    logger.info({ signal }, 'stopping the workers');
    for (const worker of running.keys()) worker.process.kill(signal);
    if (running.size === 0) process.exit(0);
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => {
    for (const worker of running.keys()) worker.process.kill('SIGHUP');
  });
}
