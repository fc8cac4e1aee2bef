import { Command, Option } from 'commander';
import { builtinAdapters } from '../adapters/index.js';
import { loadConfigFile } from './config/load.js';
import { ConfigError, formatIssue, type ConfigIssue, type GatewayConfig } from './config/types.js';
import { Gateway, ListenerError } from './gateway.js';
import { createLogger } from './log.js';
import { PROTOCOLS, type Protocol } from './message.js';
import { compileRouteTable } from './router/index.js';
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

function warn(warnings: ConfigIssue[]): void {
  for (const warning of warnings) console.error(`${formatIssue(warning)} (warning)`);
}

async function start(options: { config: string }): Promise<void> {
  const { config, warnings } = await loadOrExit(options.config);
  const logger = createLogger(config.log.level);
  for (const warning of warnings) logger.warn({ warning: formatIssue(warning) }, 'config warning');
  let gateway: Gateway;
  try {
    gateway = await Gateway.start(config, { logger, adapters: builtinAdapters, watchConfig: true });
  } catch (err) {
    if (err instanceof ListenerError || (err instanceof Error && err.message.startsWith('targets.'))) {
      console.error(err.message);
      process.exit(1);
    }
    throw err;
  }
  const shutdown = (signal: string) => {
    logger.info({ signal }, 'shutdown requested');
    gateway.stop().then(() => process.exit(0), (err: unknown) => {
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
    console.log(`         to: ${match.targets.map(describeBinding).join(', ')}`);
    if (match.fallback.length > 0) console.log(`         fallback: ${match.fallback.map(describeBinding).join(', ')}`);
  });
  for (const loser of losers) {
    console.log(`  lost   ${loser.route.name} (priority ${loser.route.priority}, rule #${loser.route.index + 1}, match ${loser.route.pattern}): ${describeLoss(loser.reason)}`);
  }
}

const program = new Command('junction')
  .description('Junction: a multi-protocol message gateway')
  .showHelpAfterError();

program.command('start')
  .description('start the gateway')
  .option('-c, --config <file>', 'configuration file', DEFAULT_CONFIG)
  .action(start);

program.command('validate')
  .description('check a configuration file; prints every error as FILE:LINE:COL: key.path: message')
  .argument('<file>')
  .action(validate);

program.command('route')
  .description('show which rule and targets a key gets, and why the other matching rules lost')
  .argument('<key>')
  .option('-c, --config <file>', 'configuration file', DEFAULT_CONFIG)
  .addOption(new Option('-p, --protocol <protocol>', 'protocol the message arrives on').choices(PROTOCOLS).default('http'))
  .option('-H, --header <name=value...>', 'a message header (repeatable)', [])
  .action(route);

program.parseAsync().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
