import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { builtins } from '../builtins.js';
import type { Registry } from '../registry.js';
import { checkReferences } from './checks.js';
import { substituteEnv } from './env-substitution.js';
import { resolveConfig } from './resolve.js';
import { checkSchema } from './schema-errors.js';
import { ConfigError, type ConfigIssue, type GatewayConfig } from './types.js';
import { parseConfigYaml } from './yaml-document.js';

export interface LoadedConfig {
  config: GatewayConfig;
  warnings: ConfigIssue[];
}

/** Reads and loads a gateway.yaml; see loadConfigText. */
export async function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env, registry: Registry = builtins): Promise<LoadedConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError([{ file, line: 0, column: 0, path: '', message: `cannot read the config file: ${osReason(err)}` }]);
  }
  return loadConfigText(text, file, env, registry);
}

/**
 * Parses, substitutes `${VAR}`, validates and resolves one gateway.yaml. Throws ConfigError with
 * every problem found, each positioned in `file`; what is suspicious but workable comes back as
 * warnings. `file` also anchors relative paths ('' = the working directory). The schema is the
 * one `registry` makes: its protocols' sections and listeners, its target types' keys.
 */
export function loadConfigText(text: string, file: string, env: NodeJS.ProcessEnv = process.env, registry: Registry = builtins): LoadedConfig {
  const report = parseConfigYaml(text, file);
  const unresolved = substituteEnv(report.doc, env, report);
  const data: unknown = report.doc.contents === null ? {} : report.doc.toJS();
  const baseDir = file === '' ? process.cwd() : path.dirname(path.resolve(file));
  // Schema and reference checks both run, so one run reports everything.
  checkSchema(data, report, unresolved, registry);
  checkReferences(data, report, baseDir, registry);
  if (report.errors.length > 0) throw new ConfigError(report.sortedErrors());
  return { config: resolveConfig(data, file, baseDir, registry), warnings: report.sortedWarnings() };
}

/** "no such file or directory (ENOENT)" from Node's "ENOENT: no such file or directory, open '…'". */
function osReason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as NodeJS.ErrnoException).code;
  const m = /^[A-Z]+: ([^,]+)/.exec(err.message);
  return m && code ? `${m[1]} (${code})` : err.message;
}
