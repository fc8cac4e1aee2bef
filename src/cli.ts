import { Command, InvalidArgumentError, Option } from 'commander';
import { builtins } from './builtins.js';
import { PACKAGE_VERSION } from './version.js';
import { loadConfigFile } from './config/load.js';
import { ConfigError, formatIssue, type ConfigIssue, type GatewayConfig } from './config/types.js';
import { SetupError } from './errors.js';
import { Gateway } from './gateway.js';
import { createLogger } from './log.js';
import { stopTracing } from './tracing.js';
import { hashPassword } from './auth/password.js';
import { newApiKey } from './auth/api-key.js';
import { ANONYMOUS } from './auth/acl.js';
import { AccessControl } from './auth/index.js';
import type { Protocol } from './message.js';
import { compileRouteTable } from './router/index.js';
import { keyProblem } from './topic/rules.js';
import { formatDuration } from './config/units.js';
import { MAX_WORKERS, type RouteRateLimitConfig } from './config/schema.js';
import { registerBenchCommand } from './bench/command.js';
import { GLIBC_MALLOC_WARNING, jemallocPath, JEMALLOC, onGlibcMalloc } from './allocator.js';
import type { LossReason, TargetBinding } from './router/types.js';

const DEFAULT_CONFIG = 'config/gateway.yaml';

/** Loads a config or prints every issue as FILE:LINE:COL and exits 1. */
async function loadOrExit(file: string): Promise<{ config: GatewayConfig; warnings: ConfigIssue[] }> {
  try {
    return await loadConfigFile(file);
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const issue of err.issues) console.error(formatIssue(issue));
      process.exit(1);
    }
    throw err;
  }
}

function positiveInteger(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > MAX_WORKERS) throw new InvalidArgumentError(`a whole number from 1 to ${MAX_WORKERS}`);
  return n;
}

function warn(warnings: ConfigIssue[]): void {
  for (const warning of warnings) console.error(`${formatIssue(warning)} (warning)`);
}

async function start(options: { config: string; workers?: number }): Promise<void> {
  const { config, warnings } = await loadOrExit(options.config);
  const workers = options.workers ?? config.workers;
  if (workers > 1 && !config.cluster) {
    console.error(`${options.workers !== undefined ? '--workers' : 'workers:'} ${workers}: several workers need cluster.redis in the config, so that they act as one gateway (docs/scale-out.md); without it run one process (--workers 1)`);
    process.exit(1);
  }
  const logger = createLogger(config.log.level);
  for (const warning of warnings) logger.warn({ warning: formatIssue(warning) }, 'config warning');
  if (onGlibcMalloc()) logger.warn({ preload: jemallocPath() ?? `${JEMALLOC} (package libjemalloc2)` }, GLIBC_MALLOC_WARNING);
  // Embedded mode loads nothing of the cluster: the supervisor module comes in only for workers.
  const supervision = workers > 1 ? await import('./cluster/workers.js') : undefined;
  if (supervision?.isSupervisor(workers)) {
    supervision.superviseWorkers(workers, logger);
    return;
  }
  const worker = supervision?.workerNumber();
  let gateway: Gateway;
  try {
    gateway = await Gateway.start(config, { logger, registry: builtins, watchConfig: true, ...(worker !== undefined ? { worker } : {}) });
  } catch (err) {
    if (err instanceof SetupError) {
      console.error(err.message);
      process.exit(1);
    }
    throw err;
  }
  const shutdown = (signal: string) => {
    logger.info({ signal }, 'shutdown requested');
    gateway.stop().then(stopTracing).then(() => process.exit(0), (err: unknown) => {
      logger.error({ err }, 'shutdown failed');
      process.exit(1);
    });
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => void gateway.reload('SIGHUP'));
}

async function validate(file: string): Promise<void> {
  const { config, warnings } = await loadOrExit(file);
  warn(warnings);
  const listeners = Object.keys(config.listeners).join(', ') || 'none';
  console.log(`${file}: ok: ${config.routes.length} routes, ${Object.keys(config.targets).length} targets, listeners: ${listeners}, defaultRoute: ${config.defaultRoute}`);
}

function describeBinding(binding: TargetBinding): string {
  switch (binding.kind) {
    case 'publish': return `publish -> ${binding.key}`;
    case 'deadletter': return 'deadletter';
    case 'target': return binding.name;
  }
}

function describeRateLimit(limit: RouteRateLimitConfig): string {
  return `${limit.rate} per ${formatDuration(limit.per)}, burst ${limit.burst}, ${limit.scope === 'client' ? 'a bucket per client' : 'one bucket for the rule'}`;
}

function describeLoss(reason: LossReason): string {
  switch (reason.kind) {
    case 'protocol': return `protocol not in [${reason.expected.join(', ')}]`;
    case 'header': return reason.actual === undefined
      ? `header ${reason.name} missing (rule wants ${reason.expected})`
      : `header ${reason.name} is ${reason.actual}, rule wants ${reason.expected}`;
    case 'precedence': return `lower precedence than ${reason.winner}`;
  }
}

async function route(key: string, options: { config: string; protocol: Protocol; header: string[] }): Promise<void> {
  // Rules match keys as messages carry them; a pattern here would be matched as if it were one.
  const problem = keyProblem(key);
  if (problem) {
    console.error(`route ${key}: ${problem}; give a key a message would carry, e.g. devices/d1/alarm`);
    process.exit(1);
  }
  const { config } = await loadOrExit(options.config);
  const headers: Record<string, string> = {};
  for (const pair of options.header) {
    const eq = pair.indexOf('=');
    if (eq <= 0) {
      console.error(`--header ${pair}: expected NAME=VALUE`);
      process.exit(1);
    }
    headers[pair.slice(0, eq).toLowerCase()] = pair.slice(eq + 1);
  }
  const table = compileRouteTable(config.routes, config.defaultRoute);
  const { decision, losers } = table.explain({ key, protocol: options.protocol, headers });
  console.log(`key ${key} (protocol ${options.protocol})`);
  if (decision.matches.length === 0) {
    console.log(`  no rule matched: defaultRoute ${decision.default}${decision.default === 'publish' ? ` -> ${key}` : ' (rejected with no_route)'}`);
  }
  decision.matches.forEach((match, i) => {
    const r = match.route;
    console.log(`  ${i === 0 ? 'winner' : 'then  '} ${r.name} (priority ${r.priority}, rule #${r.index + 1}, match ${r.pattern}${r.continue ? ', continue' : ''}${r.mode === 'request' ? ', mode request' : ''}${r.setPriority !== undefined ? `, sets priority ${r.setPriority}` : ''})`);
    console.log(`         reply timeout ${formatDuration(r.timeout)}; rate limit ${r.rateLimit ? describeRateLimit(r.rateLimit) : 'none'}`);
    console.log(`         to: ${match.targets.map(describeBinding).join(', ')}`);
    if (match.fallback.length > 0) console.log(`         fallback: ${match.fallback.map(describeBinding).join(', ')}`);
  });
  for (const loser of losers) {
    console.log(`  lost   ${loser.route.name} (priority ${loser.route.priority}, rule #${loser.route.index + 1}, match ${loser.route.pattern}): ${describeLoss(loser.reason)}`);
  }
}

interface DeadLetterOptions {
  config: string;
  admin?: string;
  token?: string;
  target?: string;
  reason?: string;
  since?: string;
  until?: string;
  limit?: string;
  record?: string[];
  json?: boolean;
}

interface AdminApi {
  base: string;
  /** admin.token, when the gateway asks for one */
  token: string | undefined;
}

/**
 * The admin API of a running gateway: --admin, else listeners.admin of the config file; its
 * token: --token, else JUNCTION_ADMIN_TOKEN, else admin.token of the config file.
 */
async function adminApi(options: DeadLetterOptions): Promise<AdminApi> {
  const given = options.token ?? (process.env.JUNCTION_ADMIN_TOKEN || undefined);
  if (options.admin) return { base: options.admin.replace(/\/$/, ''), token: given };
  const { config } = await loadOrExit(options.config);
  const admin = config.listeners.admin;
  if (!admin) {
    console.error(`${options.config}: listeners.admin is not configured; pass --admin URL`);
    process.exit(1);
  }
  const host = admin.host === '0.0.0.0' || admin.host === '::' ? '127.0.0.1' : admin.host;
  return { base: `http://${host.includes(':') ? `[${host}]` : host}:${admin.port}`, token: given ?? config.admin.token };
}

async function adminCall(api: AdminApi, path: string, init: RequestInit = {}): Promise<unknown> {
  const url = `${api.base}${path}`;
  const headers = new Headers(init.headers);
  if (api.token !== undefined) headers.set('authorization', `Bearer ${api.token}`);
  let response: Response;
  try {
    response = await fetch(url, { ...init, headers });
  } catch (err) {
    console.error(`cannot reach the gateway's admin API at ${url}: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}`);
    process.exit(1);
  }
  const body = await response.json() as { error?: string };
  if (!response.ok) {
    console.error(`${url}: ${response.status} ${body.error ?? JSON.stringify(body)}`);
    process.exit(1);
  }
  return body;
}

function deadLetterQuery(options: DeadLetterOptions): URLSearchParams {
  const query = new URLSearchParams();
  for (const key of ['target', 'reason', 'since', 'until', 'limit'] as const) {
    const value = options[key];
    if (value !== undefined) query.set(key, value);
  }
  return query;
}

interface ListedDeadLetter {
  recordId: string;
  at: string;
  target: string;
  reason: string;
  attempts: number;
  error?: string;
  replayed: boolean;
  message: { id: string; key: string };
}

async function deadLetterList(options: DeadLetterOptions): Promise<void> {
  const body = await adminCall(await adminApi(options), `/admin/deadletter?${deadLetterQuery(options)}`) as { records: ListedDeadLetter[] };
  if (options.json) {
    console.log(JSON.stringify(body, null, 2));
    return;
  }
  for (const r of body.records) {
    console.log(`${r.at}  ${r.target}  ${r.reason}  attempts=${r.attempts}${r.replayed ? '  replayed' : ''}  ${r.message.key}  id=${r.message.id}  record=${r.recordId}${r.error ? `  (${r.error})` : ''}`);
  }
  console.log(`${body.records.length} record(s)`);
}

async function deadLetterReplay(options: DeadLetterOptions): Promise<void> {
  const api = await adminApi(options);
  const body: Record<string, unknown> = Object.fromEntries(deadLetterQuery(options));
  if (options.record && options.record.length > 0) body.recordIds = options.record;
  const outcome = await adminCall(api, '/admin/deadletter/replay', {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  }) as { replayed: number; failed: number; records: { failed: { recordId: string; error: string }[] } };
  if (options.json) {
    console.log(JSON.stringify(outcome, null, 2));
  } else {
    for (const failure of outcome.records.failed) console.log(`failed ${failure.recordId}: ${failure.error}`);
    console.log(`replayed ${outcome.replayed}, failed ${outcome.failed}`);
  }
  if (outcome.failed > 0) process.exitCode = 1;
}

/**
 * Prints a hash for `auth.users[].password`. The password comes on standard input (one line),
 * never as an argument, so it stays out of shell history and `ps`.
 */
async function hashPasswordCommand(): Promise<void> {
  if (process.stdin.isTTY) process.stderr.write('password (one line; it is shown as you type): ');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk as Buffer);
    if (process.stdin.isTTY && (chunk as Buffer).includes(0x0a)) break;
  }
  const password = Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '';
  if (password === '') {
    console.error('hash-password: no password on standard input; e.g. printf %s "$PASSWORD" | junction hash-password');
    process.exit(1);
  }
  console.log(await hashPassword(password));
}

/** package.json of the installed package: the CLI runs from dist/src/. */
const version = PACKAGE_VERSION;

/** What `junction` alone prints: the commands a first run needs, and where the rest is. */
const FIRST_STEPS = `junction ${version}: a multi-protocol message gateway

  junction start [-c config/gateway.yaml]   run the gateway (admin and dashboard on listeners.admin)
  junction validate FILE                    check a config file, every error as FILE:LINE:COL
  junction route KEY [-c FILE]              which rule and targets a key gets, and why

junction --help lists every command; docs/operations.md tells how to run it in production.`;

/** Prints a new API key (once: only its hash is kept) and the config entry that holds its hash. */
async function apiKeyCommand(options: { principal: string }): Promise<void> {
  const { key, hash } = await newApiKey();
  console.log(`key:   ${key}`);
  console.log(`entry: - { key: "${hash}", principal: ${JSON.stringify(options.principal)} }`);
  console.error('Give the key to its holder now: the gateway keeps only the hash (auth.apiKeys).');
}

interface AclCheckOptions {
  config: string;
  principal: string;
  role: string[];
  claim: string[];
  publish?: string;
  subscribe?: string;
  respond?: string;
}

/** Explains what the ACL of a config file decides for one client and one request; exit 2 when it refuses. */
async function aclCheck(options: AclCheckOptions): Promise<void> {
  const asked = (['publish', 'subscribe', 'respond'] as const).filter((action) => options[action] !== undefined);
  if (asked.length !== 1) {
    console.error('acl check: give exactly one of --publish KEY, --subscribe FILTER or --respond FILTER');
    process.exit(1);
  }
  const action = asked[0]!;
  const claims: Record<string, string> = {};
  for (const pair of options.claim) {
    const eq = pair.indexOf('=');
    if (eq <= 0) {
      console.error(`--claim ${pair}: expected NAME=VALUE`);
      process.exit(1);
    }
    claims[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  const { config } = await loadOrExit(options.config);
  const subject = { principal: options.principal === ANONYMOUS ? undefined : options.principal, roles: options.role, claims };
  const decision = new AccessControl(config).decide(subject, action, options[action]!);
  const who = `${subject.principal ?? 'anonymous'}${options.role.length > 0 ? ` (roles ${options.role.join(', ')})` : ''}`;
  console.log(`${decision.allowed ? 'allow' : 'deny'}: ${who} ${action} ${options[action]!}`);
  console.log(`  ${decision.reason}`);
  if (decision.rule !== undefined) console.log(`  rule: ${JSON.stringify(config.auth.acl![decision.rule])}`);
  if (!decision.allowed) process.exitCode = 2;
}

const program = new Command('junction')
  .description('Junction: a multi-protocol message gateway')
  .version(version, '-V, --version', 'print the version')
  .showHelpAfterError();

program.command('start')
  .description('start the gateway')
  .option('-c, --config <file>', 'configuration file', DEFAULT_CONFIG)
  .addOption(new Option('-w, --workers <n>', 'processes sharing the listeners, each a node of the cluster (needs cluster.redis above 1); overrides `workers:`').argParser(positiveInteger))
  .action(start);

program.command('validate')
  .description('check a configuration file; prints every error as FILE:LINE:COL: key.path: message')
  .argument('<file>')
  .action(validate);

program.command('route')
  .description('show which rule and targets a key gets, and why the other matching rules lost')
  .argument('<key>')
  .option('-c, --config <file>', 'configuration file', DEFAULT_CONFIG)
  .addOption(new Option('-p, --protocol <protocol>', 'protocol the message arrives on').choices(builtins.protocolNames).default('http'))
  .option('-H, --header <name=value...>', 'a message header (repeatable)', [])
  .action(route);

program.command('hash-password')
  .description('read a password on standard input and print its scrypt hash for auth.users[].password')
  .action(hashPasswordCommand);

program.command('api-key')
  .description('make a new API key: prints the key (give it to its holder) and the auth.apiKeys entry with its hash')
  .requiredOption('--principal <name>', 'the name ACL rules and messages will know the key\'s holder by')
  .action(apiKeyCommand);

program.command('acl')
  .description('the ACL of a config file')
  .command('check')
  .description('explain whether a client may publish, subscribe or answer requests, and which rule decides (exit 2 when refused)')
  .option('-c, --config <file>', 'configuration file', DEFAULT_CONFIG)
  .requiredOption('--principal <name>', 'the client\'s principal ("anonymous" for a client without credentials)')
  .option('--role <role...>', 'roles the client has', [])
  .option('--claim <name=value...>', 'JWT claims, for {claim.NAME} patterns', [])
  .option('--publish <key>', 'a key to publish to')
  .option('--subscribe <filter>', 'a filter to subscribe to')
  .option('--respond <filter>', 'a filter to answer requests on')
  .action(aclCheck);

registerBenchCommand(program);

const deadletter = program.command('deadletter').description('list and replay dead-lettered messages of a running gateway');
const deadLetterOptions = (command: Command) => command
  .option('-c, --config <file>', 'configuration file (for listeners.admin)', DEFAULT_CONFIG)
  .option('--admin <url>', 'admin API base URL, e.g. http://127.0.0.1:9180')
  .option('--token <token>', 'admin.token of the gateway (default: $JUNCTION_ADMIN_TOKEN, else admin.token of --config)')
  .option('--target <name>', 'only records of this target')
  .option('--reason <reason>', 'only records with this reason (failed, retries_exhausted, breaker_open, shed, shutdown, …)')
  .option('--since <time>', 'only records from this time on (ISO 8601 or ms)')
  .option('--until <time>', 'only records before this time')
  .option('--limit <n>', 'at most this many records (default 100)')
  .option('--json', 'print JSON');
deadLetterOptions(deadletter.command('list').description('list dead-lettered messages')).action(deadLetterList);
deadLetterOptions(deadletter.command('replay').description('re-inject dead-lettered messages not replayed yet (each record at most once)'))
  .option('--record <id...>', 'only these record ids')
  .action(deadLetterReplay);

if (process.argv.length <= 2) {
  console.log(FIRST_STEPS);
  process.exit(1);
}

program.parseAsync().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
