import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../bin/junction.js', import.meta.url));

/** The start of a config for a gateway run from dist/: every listener on an ephemeral loopback port, clients anonymous. */
export const EVERY_LISTENER = `listeners:
  http: { host: 127.0.0.1, port: 0 }
  mqtt: { host: 127.0.0.1, port: 0 }
  grpc: { host: 127.0.0.1, port: 0 }
  admin: { host: 127.0.0.1, port: 0 }
auth: { anonymous: true }
`;

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI (`npm test` builds first) to completion. */
export function runCli(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: options.cwd, env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`junction ${args.join(' ')} did not exit within ${options.timeoutMs ?? 15000} ms\n${stdout}\n${stderr}`));
    }, options.timeoutMs ?? 15000);
    // 'close', not 'exit': only then has everything the process wrote been read.
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export interface RunningGateway {
  child: ChildProcess;
  /** JSON log lines so far */
  logs: Record<string, unknown>[];
  /** listener name → port, from the `listener up` log lines */
  ports: Record<string, number>;
  exited: Promise<number | null>;
}

export interface StartOptions {
  /**
   * The soft limit on the size of any file the gateway writes (`ulimit -S -f`, in the shell's
   * 512-byte blocks): a disk that refuses to take more, which `prlimit` can lift while it runs.
   */
  fileSizeBlocks?: number;
  /** the limit on open files (`ulimit -n`): descriptors the listeners compete for */
  openFiles?: number;
  /** more arguments of `junction start`, e.g. `--workers 2` */
  args?: string[];
  /** `gateway ready` lines to wait for: one per worker with `--workers N` */
  readyLines?: number;
}

/** Starts `junction start` and resolves once it logs `gateway ready`. */
export function startCli(configPath: string, env: NodeJS.ProcessEnv = {}, options: StartOptions = {}): Promise<RunningGateway> {
  const command = [process.execPath, BIN, 'start', '-c', configPath, ...(options.args ?? [])];
  const limits = [
    ...(options.fileSizeBlocks !== undefined ? [`ulimit -S -f ${options.fileSizeBlocks}`] : []),
    ...(options.openFiles !== undefined ? [`ulimit -n ${options.openFiles}`] : []),
  ];
  const [file, args] = limits.length === 0
    ? [command[0]!, command.slice(1)]
    // exec: the shell becomes the gateway, so its pid is the gateway's.
    : ['/bin/sh', ['-c', `${limits.join(' && ')} && exec "$@"`, 'sh', ...command]];
  const child = spawn(file, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const running: RunningGateway = {
    child,
    logs: [],
    ports: {},
    exited: new Promise((resolve) => child.on('exit', (code) => resolve(code))),
  };
  let stderr = '';
  let ready = 0;
  child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout!, crlfDelay: Infinity }).on('line', (line) => {
      const entry = JSON.parse(line) as Record<string, unknown>;
      running.logs.push(entry);
      if (entry.msg === 'listener up') running.ports[String(entry.listener)] = Number(String(entry.address).split(':').pop());
      if (entry.msg === 'gateway ready' && ++ready === (options.readyLines ?? 1)) resolve(running);
    });
    void running.exited.then((code) => reject(new Error(`gateway exited with ${code} before it was ready: ${stderr}`)));
  });
}
